//! The campaign state machine: what an operator may do to a campaign in each state.
//!
//! ```text
//! draft ─launch→ scheduled ─(fan-out)→ running ─(fan-out)→ completed
//!                    │  ↑                 │
//!                  pause └──resume── paused ←─pause─┘
//! cancel: draft | scheduled | running | paused → cancelled
//! ```
//! The fan-out moves `scheduled → running → completed` with its own conditional
//! updates; this module only answers for the operator's actions.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CampaignState {
    Draft,
    Scheduled,
    Running,
    Paused,
    Completed,
    Cancelled,
}

/// What an operator asks of a campaign.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CampaignAction {
    Launch,
    Pause,
    Resume,
    Cancel,
}

/// An action the campaign's current state does not allow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("cannot {action} a campaign that is {from}")]
pub struct InvalidTransition {
    pub from: CampaignState,
    pub action: CampaignAction,
}

impl CampaignState {
    pub const ALL: [CampaignState; 6] = [
        Self::Draft,
        Self::Scheduled,
        Self::Running,
        Self::Paused,
        Self::Completed,
        Self::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Draft => "draft",
            Self::Scheduled => "scheduled",
            Self::Running => "running",
            Self::Paused => "paused",
            Self::Completed => "completed",
            Self::Cancelled => "cancelled",
        }
    }

    /// Nothing moves a campaign out of these.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Cancelled)
    }

    /// The state after `action`, or why it is not allowed.
    pub fn transition(self, action: CampaignAction) -> Result<CampaignState, InvalidTransition> {
        use CampaignAction as A;
        use CampaignState as S;
        match (self, action) {
            (S::Draft, A::Launch) => Ok(S::Scheduled),
            (S::Scheduled | S::Running, A::Pause) => Ok(S::Paused),
            // Back to scheduled: the fan-out moves it on to running when it is due.
            (S::Paused, A::Resume) => Ok(S::Scheduled),
            (S::Draft | S::Scheduled | S::Running | S::Paused, A::Cancel) => Ok(S::Cancelled),
            (from, action) => Err(InvalidTransition { from, action }),
        }
    }
}

impl CampaignAction {
    pub const ALL: [CampaignAction; 4] = [Self::Launch, Self::Pause, Self::Resume, Self::Cancel];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Launch => "launch",
            Self::Pause => "pause",
            Self::Resume => "resume",
            Self::Cancel => "cancel",
        }
    }
}

impl fmt::Display for CampaignState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for CampaignAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A state name that is not one of ours.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown campaign state {0:?}")]
pub struct UnknownCampaignState(pub String);

impl FromStr for CampaignState {
    type Err = UnknownCampaignState;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| UnknownCampaignState(s.to_owned()))
    }
}

/// Compares with the stored name (`status == "sent"`), as rows and tests read.
impl PartialEq<&str> for CampaignState {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

#[cfg(test)]
mod tests {
    use super::CampaignAction::*;
    use super::CampaignState::*;
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_happy_path() {
        assert_eq!(Draft.transition(Launch), Ok(Scheduled));
        assert_eq!(Scheduled.transition(Pause), Ok(Paused));
        assert_eq!(Running.transition(Pause), Ok(Paused));
        assert_eq!(Paused.transition(Resume), Ok(Scheduled));
        for from in [Draft, Scheduled, Running, Paused] {
            assert_eq!(from.transition(Cancel), Ok(Cancelled), "{from}");
        }
    }

    #[test]
    fn invalid_moves_name_the_current_state() {
        let e = Running.transition(Launch).unwrap_err();
        assert_eq!(e.to_string(), "cannot launch a campaign that is running");
        assert_eq!(Draft.transition(Pause).unwrap_err().from, Draft);
        assert!(Scheduled.transition(Resume).is_err());
        assert!(Paused.transition(Pause).is_err());
    }

    #[test]
    fn terminal_states_allow_nothing() {
        for from in [Completed, Cancelled] {
            for action in CampaignAction::ALL {
                assert_eq!(
                    from.transition(action),
                    Err(InvalidTransition { from, action })
                );
            }
        }
    }

    #[test]
    fn names_round_trip() {
        for s in CampaignState::ALL {
            assert_eq!(s.as_str().parse::<CampaignState>(), Ok(s));
        }
        assert!("done".parse::<CampaignState>().is_err());
    }

    proptest! {
        /// Whatever operators do, a campaign never returns to draft, never
        /// leaves a terminal state and reaches only what the fan-out expects.
        #[test]
        fn any_sequence_of_actions_stays_in_the_machine(
            actions in proptest::collection::vec(proptest::sample::select(CampaignAction::ALL.to_vec()), 0..20),
        ) {
            let mut cur = Draft;
            let mut launches = 0;
            for action in actions {
                match cur.transition(action) {
                    Ok(next) => {
                        prop_assert!(!cur.is_terminal());
                        prop_assert!(next != Draft && next != Running && next != Completed);
                        launches += usize::from(action == Launch);
                        prop_assert!(launches <= 1);
                        cur = next;
                    }
                    Err(e) => prop_assert_eq!(e.from, cur),
                }
            }
        }
    }
}

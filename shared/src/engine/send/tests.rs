use super::*;

#[test]
fn backoff_grows_and_is_capped() {
    let (base, cap) = (Duration::from_secs(2), Duration::from_secs(600));
    for _ in 0..200 {
        assert!(backoff(1, base, cap) <= Duration::from_secs(4));
        assert!(backoff(3, base, cap) <= Duration::from_secs(16));
        assert!(backoff(30, base, cap) <= cap);
    }
    // Full jitter spreads retries over the whole range.
    let samples: Vec<_> = (0..200).map(|_| backoff(8, base, cap)).collect();
    assert!(samples.iter().any(|d| *d < Duration::from_secs(100)));
    assert!(samples.iter().any(|d| *d > Duration::from_secs(300)));
}

mod decide {
    use super::*;
    use proptest::prelude::*;

    fn claimed(
        state: &str,
        consent: Option<&str>,
        inbound_hours_ago: Option<i64>,
        quiet: Option<(u32, u32)>,
        attributes: Value,
        now: DateTime<Utc>,
        (topic, subscribed): (Option<&str>, bool),
    ) -> ClaimedMessage {
        let time = |h: u32| NaiveTime::from_hms_opt(h, 0, 0).unwrap();
        ClaimedMessage {
            message_id: Uuid::nil(),
            claim: 1,
            account_holds: 0,
            campaign_id: Uuid::nil(),
            phone_number: "+14155552671".into(),
            attempts: 0,
            campaign_state: state.parse().unwrap(),
            rate_per_second: 10,
            quiet_hours_start: quiet.map(|q| time(q.0)),
            quiet_hours_end: quiet.map(|q| time(q.1)),
            default_timezone: "UTC".into(),
            frequency_cap: None,
            max_attempts: 5,
            topic: topic.map(str::to_owned),
            topic_subscribed: subscribed,
            template_id: Uuid::nil(),
            template_version: now,
            body: Some("Hi {{ first_name }}".into()),
            content_sid: None,
            content_variables: None,
            consent: consent.map(|c| c.parse().unwrap()),
            attributes: Some(attributes),
            profile_name: None,
            last_inbound_at: inbound_hours_ago.map(|h| now - chrono::Duration::hours(h)),
            event_properties: None,
        }
    }

    fn name(d: &Decision) -> &'static str {
        match d {
            Decision::End { decision, .. } => decision,
            Decision::Send(_) => "send",
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        /// DESIGN §5's order: the campaign's state, then consent, then the window
        /// and the template, then quiet hours, then rendering. A person who is
        /// skipped is never deferred or sent; a deferral never sends.
        #[test]
        fn decisions_follow_the_order_of_design_5(
            state in prop::sample::select(vec!["running", "paused", "cancelled"]),
            consent in prop::sample::select(vec![Some("opted_in"), Some("opted_out"), Some("unknown"), None]),
            inbound in prop::option::of(0i64..48),
            quiet in prop::option::of((0u32..24, 0u32..24)),
            has_name in any::<bool>(),
            content in any::<bool>(),
            minute_of_day in 0i64..(24 * 60),
            topic in prop::option::of(Just("promotions")),
            subscribed in any::<bool>(),
        ) {
            let now = "2026-06-01T00:00:00Z".parse::<DateTime<Utc>>().unwrap()
                + chrono::Duration::minutes(minute_of_day);
            let attributes = if has_name { json!({"first_name": "Ada"}) } else { json!({}) };
            let c = claimed(state, consent, inbound, quiet, attributes, now, (topic, subscribed));
            let template = if content {
                Template::new(Some("Hi {{ first_name }}"), Some("HX123"), Some(&json!({"1": "{{ first_name }}"})))
            } else {
                Template::new(Some("Hi {{ first_name }}"), None, None)
            }.unwrap();
            let decision = decide(&c, Ok(&template), now, &SenderSettings::default());
            let name = name(&decision);
            let quiet_now = quiet_hours(c.quiet_hours_start, c.quiet_hours_end)
                .and_then(|q| q.defer_until(now, Tz::UTC));
            let in_window = inbound.is_some_and(|h| h < 24);
            match (state, consent) {
                ("cancelled", _) => prop_assert_eq!(name, "cancelled"),
                ("paused", _) => prop_assert_eq!(name, "deferred_paused"),
                (_, c) if c != Some("opted_in") => prop_assert_eq!(name, "skipped_no_consent"),
                _ if topic.is_some() && !subscribed => prop_assert_eq!(name, "skipped_topic_unsubscribed"),
                _ if !in_window && !content => prop_assert_eq!(name, "needs_template_outside_window"),
                _ if quiet_now.is_some() => prop_assert_eq!(name, "deferred_quiet_hours"),
                _ if !has_name => prop_assert_eq!(name, "skipped_render"),
                _ => prop_assert_eq!(name, "send"),
            }
            match &decision {
                Decision::End { ending: Ending::Deferred { until }, .. } => prop_assert!(*until > now),
                Decision::Send(plan) => {
                    prop_assert_eq!(plan.use_content, !in_window);
                    prop_assert!(quiet_now.is_none());
                }
                _ => {}
            }
        }
    }

    #[test]
    fn a_template_that_does_not_compile_skips_with_its_error() {
        let now = Utc::now();
        let c = claimed(
            "running",
            Some("opted_in"),
            Some(1),
            None,
            json!({}),
            now,
            (None, true),
        );
        let d = decide(
            &c,
            Err("body: unexpected end"),
            now,
            &SenderSettings::default(),
        );
        assert_eq!(
            d,
            end(
                Ending::Skipped,
                "skipped_render",
                json!({"template_error": "body: unexpected end"})
            )
        );
    }

    #[test]
    fn a_triggered_message_renders_its_event_properties() {
        let now = Utc::now();
        let mut c = claimed(
            "running",
            Some("opted_in"),
            Some(1),
            None,
            json!({"first_name": "Ada"}),
            now,
            (None, true),
        );
        let template = Template::new(
            Some("Hi {{ first_name }}, order {{ event.order_id }} shipped"),
            None,
            None,
        )
        .unwrap();
        let settings = SenderSettings::default();
        // Without the event the variable is missing: skipped, naming it.
        assert_eq!(
            name(&decide(&c, Ok(&template), now, &settings)),
            "skipped_render"
        );
        c.event_properties = Some(json!({"order_id": "A-17"}));
        match decide(&c, Ok(&template), now, &settings) {
            Decision::Send(plan) => assert_eq!(
                plan.rendered.body.as_deref(),
                Some("Hi Ada, order A-17 shipped")
            ),
            other => panic!("expected a send, got {other:?}"),
        }
    }
}

//! Domain types as PostgreSQL `text` columns: rows read them typed (an
//! unknown value is a decode error naming it), queries bind them. The
//! domain stays free of sqlx; the mapping lives here.

use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgArgumentBuffer, PgTypeInfo, PgValueRef};
use sqlx::{Decode, Encode, Postgres, Type};

use crate::domain::{CampaignState, Consent, ConsentSource, MessageStatus};

macro_rules! text_column {
    ($t:ty, $parse:expr) => {
        impl Type<Postgres> for $t {
            fn type_info() -> PgTypeInfo {
                <str as Type<Postgres>>::type_info()
            }

            fn compatible(ty: &PgTypeInfo) -> bool {
                <str as Type<Postgres>>::compatible(ty)
            }
        }

        impl<'r> Decode<'r, Postgres> for $t {
            fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
                let text = <&str as Decode<Postgres>>::decode(value)?;
                let parse: fn(&str) -> Result<$t, String> = $parse;
                Ok(parse(text)?)
            }
        }

        impl Encode<'_, Postgres> for $t {
            fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
                <&str as Encode<Postgres>>::encode(self.as_str(), buf)
            }
        }
    };
}

text_column!(MessageStatus, |s| s.parse().map_err(|e| format!("{e}")));
text_column!(CampaignState, |s| s.parse().map_err(|e| format!("{e}")));
text_column!(Consent, |s| s.parse());
text_column!(ConsentSource, |s| ConsentSource::parse(s)
    .ok_or_else(|| format!("unknown consent source {s:?}")));

//! `X-Twilio-Signature`: HMAC-SHA1 over the full URL plus the form parameters
//! sorted by name (or, for JSON bodies, over the URL whose `bodySHA256`
//! parameter carries the body's SHA-256), base64, compared in constant time.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::Secret;

/// The signature Twilio would send for a form request.
///
/// Parameters are sorted by name and, for a repeated name, by value, with
/// repeated name-value pairs counted once (as Twilio's own libraries do), then
/// each name and value is appended to the URL with no separator.
pub fn compute_signature(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    sorted.dedup();
    let mut mac =
        Hmac::<Sha1>::new_from_slice(auth_token.as_bytes()).expect("HMAC takes any key length");
    mac.update(url.as_bytes());
    for (k, v) in sorted {
        mac.update(k.as_bytes());
        mac.update(v.as_bytes());
    }
    STANDARD.encode(mac.finalize().into_bytes())
}

/// Hex SHA-256 of a JSON body, as Twilio puts it in `bodySHA256`.
pub fn body_sha256(body: &[u8]) -> String {
    hex::encode(Sha256::digest(body))
}

/// Validates requests against every configured auth token, so that a token can
/// be rotated without a moment in which Twilio's requests are refused.
#[derive(Clone, Debug)]
pub struct SignatureValidator {
    tokens: Vec<Secret>,
}

impl SignatureValidator {
    pub fn new(tokens: Vec<Secret>) -> Self {
        assert!(!tokens.is_empty(), "at least one Twilio auth token");
        Self { tokens }
    }

    /// The token new signatures are made with (the first configured).
    pub fn primary_token(&self) -> &str {
        self.tokens[0].expose()
    }

    /// A form-encoded request: `url` is the full public URL with its query.
    pub fn validate_form(&self, url: &str, params: &[(String, String)], signature: &str) -> bool {
        self.any_match(
            url,
            |token, u| compute_signature(token, u, params),
            signature,
        )
    }

    /// A JSON request: the URL's `bodySHA256` must be the body's hash and the
    /// signature is over the URL alone.
    pub fn validate_json(&self, url: &str, body: &[u8], signature: &str) -> bool {
        let claimed = url::Url::parse(url).ok().and_then(|u| {
            u.query_pairs()
                .find(|(k, _)| k == "bodySHA256")
                .map(|(_, v)| v.into_owned())
        });
        let Some(claimed) = claimed else {
            return false;
        };
        let actual = body_sha256(body);
        if !bool::from(claimed.as_bytes().ct_eq(actual.as_bytes())) {
            return false;
        }
        self.any_match(url, |token, u| compute_signature(token, u, &[]), signature)
    }

    fn any_match(&self, url: &str, sign: impl Fn(&str, &str) -> String, signature: &str) -> bool {
        let variants = url_variants(url);
        // Every candidate is computed and compared, so timing reveals nothing
        // about which token or URL form matched.
        let mut ok = subtle::Choice::from(0);
        for token in &self.tokens {
            for u in &variants {
                ok |= sign(token.expose(), u)
                    .as_bytes()
                    .ct_eq(signature.as_bytes());
            }
        }
        ok.into()
    }
}

/// The URL as given, and the same URL with its default port added or removed:
/// Twilio signs with the URL as configured in its console, which may or may
/// not name the port.
fn url_variants(url: &str) -> Vec<String> {
    let mut out = vec![url.to_owned()];
    let Some(scheme_end) = url.find("://") else {
        return out;
    };
    let default_port = match &url[..scheme_end] {
        s if s.eq_ignore_ascii_case("https") => "443",
        s if s.eq_ignore_ascii_case("http") => "80",
        _ => return out,
    };
    let authority_start = scheme_end + 3;
    let authority_end = url[authority_start..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| authority_start + i);
    let authority = &url[authority_start..authority_end];
    let host_start = authority.rfind('@').map_or(0, |i| i + 1);
    let host_port = &authority[host_start..];
    // An IPv6 literal has colons inside brackets; a port follows the closing one.
    let port_sep = match host_port.rfind(']') {
        Some(b) => host_port[b..].find(':').map(|i| b + i),
        None => host_port.rfind(':'),
    };
    let (before, after) = (&url[..authority_start + host_start], &url[authority_end..]);
    match port_sep {
        Some(i) => out.push(format!("{before}{}{after}", &host_port[..i])),
        None => out.push(format!("{before}{host_port}:{default_port}{after}")),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // Twilio's documented example (auth token 12345).
    const URL: &str = "https://mycompany.com/myapp.php?foo=1&bar=2";

    fn params() -> Vec<(String, String)> {
        [
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+14158675309"),
            ("Digits", "1234"),
            ("From", "+14158675309"),
            ("To", "+18005551212"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    fn validator(tokens: &[&str]) -> SignatureValidator {
        SignatureValidator::new(
            tokens
                .iter()
                .map(|t| Secret::new((*t).to_owned()))
                .collect(),
        )
    }

    #[test]
    fn documented_form_example() {
        assert_eq!(
            compute_signature("12345", URL, &params()),
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        );
        let mut shuffled = params();
        shuffled.reverse();
        assert!(validator(&["12345"]).validate_form(
            URL,
            &shuffled,
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        ));
    }

    #[test]
    fn documented_repeated_parameters_example() {
        let p: Vec<(String, String)> = [
            ("Sid", "CA123"),
            ("SidAccount", "AC123"),
            ("Digits", "5678"),
            ("Digits", "1234"),
            ("Digits", "1234"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        assert!(validator(&["12345"]).validate_form(URL, &p, "IK+Dwps556ElfBT0I3Rgjkr1wJU="));
    }

    #[test]
    fn documented_json_example() {
        let body = br#"{"property": "value", "boolean": true}"#;
        assert_eq!(
            body_sha256(body),
            "0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620"
        );
        let url = format!("{URL}&bodySHA256={}", body_sha256(body));
        let v = validator(&["12345"]);
        assert!(v.validate_json(&url, body, "a9nBmqA0ju/hNViExpshrM61xv4="));
        assert!(!v.validate_json(
            &url,
            b"{\"property\": \"other\"}",
            "a9nBmqA0ju/hNViExpshrM61xv4="
        ));
        assert!(!v.validate_json(URL, body, "a9nBmqA0ju/hNViExpshrM61xv4="));
    }

    #[test]
    fn documented_port_examples() {
        let v = validator(&["12345"]);
        // Signed with the port, validated without it, and the other way round.
        assert!(v.validate_form(URL, &params(), "kvajT1Ptam85bY51eRf/AJRuM3w="));
        let http = URL.replace("https", "http");
        assert!(v.validate_form(&http, &params(), "0ZXoZLH/DfblKGATFgpif+LLRf4="));
        let with_port = URL.replace(".com", ".com:1234");
        assert!(v.validate_form(&with_port, &params(), "RSOYDt4T1cUTdK1PDd93/VVr8B8="));
        let creds = "https://user:pass@mycompany.com/myapp.php?foo=1&bar=2";
        assert!(v.validate_form(creds, &params(), "CukzLTc1tT5dXEDIHm/tKBanW10="));
        assert!(v.validate_form(creds, &params(), "ZQFR1PTIZXF2MXB8ZnKCvnnA+rI="));
    }

    #[test]
    fn forged_and_missing_signatures_fail() {
        let v = validator(&["12345"]);
        assert!(!v.validate_form(URL, &params(), "FAIL"));
        assert!(!v.validate_form(URL, &params(), ""));
        assert!(!v.validate_form(
            &format!("{URL}&extra=1"),
            &params(),
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        ));
        let mut tampered = params();
        tampered[2].1 = "9999".into();
        assert!(!v.validate_form(URL, &tampered, "RSOYDt4T1cUTdK1PDd93/VVr8B8="));
        assert!(!validator(&["54321"]).validate_form(
            URL,
            &params(),
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        ));
    }

    #[test]
    fn rotation_accepts_every_configured_token() {
        let v = validator(&["new-token", "12345"]);
        assert!(v.validate_form(URL, &params(), "RSOYDt4T1cUTdK1PDd93/VVr8B8="));
        let new_sig = compute_signature("new-token", URL, &params());
        assert!(v.validate_form(URL, &params(), &new_sig));
        assert_eq!(v.primary_token(), "new-token");
    }

    proptest! {
        #[test]
        fn a_signature_validates_and_any_change_breaks_it(
            token in "[a-f0-9]{32}",
            path in "/[a-z]{1,12}",
            values in proptest::collection::vec(("[A-Za-z]{1,10}", "[ -~]{0,20}"), 0..8),
            flip in any::<prop::sample::Index>(),
        ) {
            let params: Vec<(String, String)> = values;
            let url = format!("https://hooks.example.com{path}?mid=1");
            let sig = compute_signature(&token, &url, &params);
            let v = SignatureValidator::new(vec![Secret::new(token.clone())]);
            prop_assert!(v.validate_form(&url, &params, &sig));
            let mut bytes = sig.into_bytes();
            let i = flip.index(bytes.len() - 1);
            bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
            prop_assert!(!v.validate_form(&url, &params, &String::from_utf8(bytes).unwrap()));
        }
    }
}

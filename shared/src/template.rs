//! Message templates (DESIGN §4): minijinja over the user's attributes plus
//! built-ins, with the seed's `{first_name}` placeholders meaning
//! `{{ first_name }}`, and Twilio Content API variables rendered per user.

use std::collections::BTreeSet;

use minijinja::{Environment, ErrorKind, UndefinedBehavior};
use serde_json::{Map, Value};

/// A template that parsed; render it once per recipient.
#[derive(Debug)]
pub struct Template {
    env: Environment<'static>,
    has_body: bool,
    content_sid: Option<String>,
    /// Content variable names (Twilio's `"1"`, `"2"`, …) in order.
    content_keys: Vec<String>,
}

/// What one recipient gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub body: Option<String>,
    pub content_sid: Option<String>,
    /// The `ContentVariables` JSON object, as Twilio takes it.
    pub content_variables: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("a template needs a body or a content_sid")]
    Empty,
    #[error("{field}: {message}")]
    Syntax { field: String, message: String },
    #[error("content_variables must be a JSON object of strings")]
    ContentVariables,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error("missing variables: {}", .0.join(", "))]
    MissingVariables(Vec<String>),
    #[error("template failed: {0}")]
    Failed(String),
}

const BODY: &str = "body";

/// Instructions one render may run: thousands of times what a message needs,
/// far less than a loop that would hold a sender for long.
pub const RENDER_FUEL: u64 = 100_000;

impl Template {
    pub fn new(
        body: Option<&str>,
        content_sid: Option<&str>,
        content_variables: Option<&Value>,
    ) -> Result<Self, TemplateError> {
        if body.is_none() && content_sid.is_none() {
            return Err(TemplateError::Empty);
        }
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        // No template can hang a sender: rendering stops after this many steps.
        env.set_fuel(Some(RENDER_FUEL));
        env.set_keep_trailing_newline(true);
        let mut add = |name: String, source: &str| {
            env.add_template_owned(name.clone(), single_braces_to_jinja(source))
                .map_err(|e| TemplateError::Syntax {
                    field: name,
                    message: e.to_string(),
                })
        };
        if let Some(b) = body {
            add(BODY.to_owned(), b)?;
        }
        let mut content_keys = vec![];
        match content_variables {
            None | Some(Value::Null) => {}
            Some(Value::Object(vars)) => {
                for (k, v) in vars {
                    let Value::String(src) = v else {
                        return Err(TemplateError::ContentVariables);
                    };
                    add(format!("content_variables.{k}"), src)?;
                    content_keys.push(k.clone());
                }
            }
            Some(_) => return Err(TemplateError::ContentVariables),
        }
        Ok(Self {
            env,
            has_body: body.is_some(),
            content_sid: content_sid.map(str::to_owned),
            content_keys,
        })
    }

    /// Whether this template can be sent outside the 24-hour window.
    pub fn is_content_template(&self) -> bool {
        self.content_sid.is_some()
    }

    /// Every variable the template reads (dotted for nested ones).
    pub fn variables(&self) -> BTreeSet<String> {
        self.env
            .templates()
            .flat_map(|(_, t)| t.undeclared_variables(true))
            .collect()
    }

    /// Renders for one recipient. A variable the context lacks is an error
    /// naming it, unless the template gives a default (`{{ x | default("friend") }}`).
    pub fn render(&self, ctx: &Value) -> Result<Rendered, RenderError> {
        let render_one = |name: &str| -> Result<String, RenderError> {
            let t = self
                .env
                .get_template(name)
                .map_err(|e| RenderError::Failed(e.to_string()))?;
            t.render(ctx).map_err(|e| {
                if e.kind() == ErrorKind::UndefinedError {
                    RenderError::MissingVariables(missing(&t, t.undeclared_variables(true), ctx))
                } else {
                    RenderError::Failed(e.to_string())
                }
            })
        };
        let body = if self.has_body {
            Some(render_one(BODY)?)
        } else {
            None
        };
        let content_variables = if self.content_keys.is_empty() {
            None
        } else {
            let mut vars = Map::new();
            for k in &self.content_keys {
                vars.insert(
                    k.clone(),
                    render_one(&format!("content_variables.{k}"))?.into(),
                );
            }
            Some(Value::Object(vars).to_string())
        };
        Ok(Rendered {
            body,
            content_sid: self.content_sid.clone(),
            content_variables,
        })
    }
}

/// The variables of `declared` that `ctx` lacks and the template cannot do
/// without: a candidate with a `default` renders once every other candidate
/// is filled in, a required one still fails.
fn missing(
    t: &minijinja::Template<'_, '_>,
    declared: std::collections::HashSet<String>,
    ctx: &Value,
) -> Vec<String> {
    let absent: Vec<String> = declared
        .into_iter()
        .filter(|name| {
            name.split('.')
                .try_fold(ctx, |cur, key| cur.get(key))
                .is_none()
        })
        .collect();
    let mut out: Vec<String> = absent
        .iter()
        .filter(|candidate| {
            let mut filled = ctx.clone();
            for other in absent.iter().filter(|o| o != candidate) {
                fill(&mut filled, other);
            }
            t.render(&filled).is_err()
        })
        .cloned()
        .collect();
    out.sort();
    if out.is_empty() {
        // The engine found something undefined that is not a plain path (an index, say).
        out.push("(an undefined value)".to_owned());
    }
    out
}

/// Sets a dotted path to an empty string, creating objects on the way.
fn fill(ctx: &mut Value, dotted: &str) {
    let mut cur = ctx;
    let parts: Vec<&str> = dotted.split('.').collect();
    for (i, key) in parts.iter().enumerate() {
        let Value::Object(map) = cur else { return };
        let last = i == parts.len() - 1;
        cur = map.entry((*key).to_owned()).or_insert_with(|| {
            if last {
                Value::String(String::new())
            } else {
                Value::Object(Map::new())
            }
        });
    }
}

/// `{first_name}` → `{{ first_name }}`; Jinja's own `{{ … }}`, `{% … %}` and
/// `{# … #}` pass through untouched, and so does a brace not around a name.
pub fn single_braces_to_jinja(src: &str) -> String {
    let bytes = src.as_bytes();
    let mut out = String::with_capacity(src.len() + 8);
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'{' {
            if let Some(&next) = bytes.get(i + 1)
                && matches!(next, b'{' | b'%' | b'#')
            {
                let close = match next {
                    b'{' => "}}",
                    b'%' => "%}",
                    _ => "#}",
                };
                let end = src[i + 2..]
                    .find(close)
                    .map_or(src.len(), |e| i + 2 + e + 2);
                out.push_str(&src[i..end]);
                i = end;
                continue;
            }
            let name_len = src[i + 1..]
                .bytes()
                .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'.')
                .count();
            let starts_ok = bytes
                .get(i + 1)
                .is_some_and(|b| b.is_ascii_alphabetic() || *b == b'_');
            if starts_ok && bytes.get(i + 1 + name_len) == Some(&b'}') {
                out.push_str("{{ ");
                out.push_str(&src[i + 1..i + 1 + name_len]);
                out.push_str(" }}");
                i += name_len + 2;
                continue;
            }
        }
        let ch = src[i..].chars().next().expect("in bounds");
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

/// What a template sees for one user: the attributes at the top level, plus
/// the built-ins `phone_number` and `profile_name` (built-ins win).
pub fn user_context(phone: &str, attributes: &Value, profile_name: Option<&str>) -> Value {
    let mut ctx = match attributes {
        Value::Object(m) => m.clone(),
        _ => Map::new(),
    };
    ctx.insert("phone_number".into(), phone.into());
    if let Some(p) = profile_name {
        ctx.insert("profile_name".into(), p.into());
    }
    Value::Object(ctx)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn single_braces_mean_double_braces() {
        assert_eq!(
            single_braces_to_jinja("Hi {first_name}!"),
            "Hi {{ first_name }}!"
        );
        assert_eq!(
            single_braces_to_jinja("{{ a }} and {b.c}"),
            "{{ a }} and {{ b.c }}"
        );
        assert_eq!(
            single_braces_to_jinja("{% if x %}{x}{% endif %}"),
            "{% if x %}{{ x }}{% endif %}"
        );
        assert_eq!(
            single_braces_to_jinja("json {\"a\": 1} { spaced } {1}"),
            "json {\"a\": 1} { spaced } {1}"
        );
        assert_eq!(
            single_braces_to_jinja("¡hola {nombre}! {"),
            "¡hola {{ nombre }}! {"
        );
    }

    #[test]
    fn renders_attributes_and_built_ins() {
        let t = Template::new(
            Some("Hi {first_name}, your code is {{ plan.code }} ({phone_number})"),
            None,
            None,
        )
        .unwrap();
        let ctx = user_context(
            "+14155552671",
            &json!({"first_name": "Ada", "plan": {"code": "G7"}}),
            None,
        );
        assert_eq!(
            t.render(&ctx).unwrap().body.unwrap(),
            "Hi Ada, your code is G7 (+14155552671)"
        );
    }

    #[test]
    fn a_missing_variable_is_named_unless_defaulted() {
        let t = Template::new(
            Some("Hi {first_name} from {city}, {{ x | default('y') }}"),
            None,
            None,
        )
        .unwrap();
        let err = t.render(&json!({"city": "Lyon"})).unwrap_err();
        assert_eq!(
            err,
            RenderError::MissingVariables(vec!["first_name".into()])
        );
        assert_eq!(err.to_string(), "missing variables: first_name");
        let d = Template::new(Some("Hi {{ first_name | default('friend') }}"), None, None).unwrap();
        assert_eq!(d.render(&json!({})).unwrap().body.unwrap(), "Hi friend");
        let nested = Template::new(Some("{{ plan.tier }}"), None, None).unwrap();
        assert_eq!(
            nested.render(&json!({"plan": {}})).unwrap_err(),
            RenderError::MissingVariables(vec!["plan.tier".into()])
        );
    }

    #[test]
    fn content_templates_render_their_variables() {
        let vars = json!({"1": "{first_name}", "2": "{{ order_id }}"});
        let t = Template::new(None, Some("HX123"), Some(&vars)).unwrap();
        assert!(t.is_content_template());
        let r = t
            .render(&json!({"first_name": "Ada", "order_id": 42}))
            .unwrap();
        assert_eq!(r.body, None);
        assert_eq!(r.content_sid.as_deref(), Some("HX123"));
        let parsed: Value = serde_json::from_str(r.content_variables.as_deref().unwrap()).unwrap();
        assert_eq!(parsed, json!({"1": "Ada", "2": "42"}));
        assert_eq!(
            t.render(&json!({"first_name": "Ada"})).unwrap_err(),
            RenderError::MissingVariables(vec!["order_id".into()])
        );
    }

    #[test]
    fn bad_templates_are_refused_with_the_reason() {
        assert_eq!(
            Template::new(None, None, None).unwrap_err(),
            TemplateError::Empty
        );
        let e = Template::new(Some("Hi {{ name"), None, None).unwrap_err();
        assert!(
            matches!(e, TemplateError::Syntax { ref field, .. } if field == "body"),
            "{e}"
        );
        assert_eq!(
            Template::new(None, Some("HX1"), Some(&json!([1]))).unwrap_err(),
            TemplateError::ContentVariables
        );
    }

    #[test]
    fn lists_its_variables() {
        let t = Template::new(Some("{a} {{ b.c }}"), None, None).unwrap();
        assert_eq!(
            t.variables().into_iter().collect::<Vec<_>>(),
            vec!["a", "b.c"]
        );
    }

    #[test]
    fn a_runaway_template_runs_out_of_fuel() {
        let t = Template::new(
            Some("{% for i in range(10000) %}{% for j in range(10000) %}x{% endfor %}{% endfor %}"),
            None,
            None,
        )
        .unwrap();
        // 100,000,000 steps asked for; the render stops at the fuel limit.
        let err = t.render(&serde_json::json!({})).unwrap_err();
        assert!(err.to_string().contains("fuel"), "{err}");
    }
}

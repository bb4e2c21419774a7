//! The deployment matches the code: every function crate has a Cloud Run
//! service in `infra/services.tf`, and each service's environment covers the
//! variables its binary cannot start without.

use std::collections::BTreeSet;
use std::path::Path;

use hcl::expr::{Expression, ObjectKey};

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

/// Crates under `functions/` that are not deployed as services.
const NOT_SERVICES: &[&str] = &["local", "migrate"];

fn required_env(function: &str) -> &'static [&'static str] {
    match function {
        "inbound" => inbound::REQUIRED_ENV,
        "status" => status::REQUIRED_ENV,
        "sender" => sender::REQUIRED_ENV,
        "fanout" => fanout::REQUIRED_ENV,
        "api" => api::REQUIRED_ENV,
        "ingest" => ingest::REQUIRED_ENV,
        "events" => events::REQUIRED_ENV,
        other => panic!("function crate {other} is new: add its REQUIRED_ENV here"),
    }
}

fn key_name(k: &ObjectKey) -> String {
    match k {
        ObjectKey::Identifier(id) => id.to_string(),
        ObjectKey::Expression(Expression::String(s)) => s.clone(),
        ObjectKey::Expression(e) => e.to_string(),
        other => format!("{other:?}"),
    }
}

fn object_keys(e: &Expression) -> BTreeSet<String> {
    match e {
        Expression::Object(o) => o.keys().map(key_name).collect(),
        _ => BTreeSet::new(),
    }
}

/// `locals { name = { fn = { KEY = … } } }` → the keys under `fn`.
fn nested_keys(body: &hcl::Body, local: &str, function: &str) -> BTreeSet<String> {
    body.blocks()
        .filter(|b| b.identifier() == "locals")
        .flat_map(|b| b.body().attributes())
        .filter(|a| a.key() == local)
        .filter_map(|a| match a.expr() {
            Expression::Object(o) => o
                .iter()
                .find(|(k, _)| key_name(k) == function)
                .map(|(_, v)| object_keys(v)),
            _ => None,
        })
        .flatten()
        .collect()
}

fn function_crates() -> BTreeSet<String> {
    std::fs::read_dir(Path::new(ROOT).join("functions"))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !NOT_SERVICES.contains(&n.as_str()))
        .collect()
}

#[test]
fn every_function_has_a_service_with_the_environment_it_requires() {
    let text = std::fs::read_to_string(Path::new(ROOT).join("infra/services.tf")).unwrap();
    let body: hcl::Body = hcl::from_str(&text).expect("services.tf parses as HCL");

    let sized: BTreeSet<String> = body
        .blocks()
        .filter(|b| b.identifier() == "locals")
        .flat_map(|b| b.body().attributes())
        .filter(|a| a.key() == "default_sizing")
        .flat_map(|a| object_keys(a.expr()))
        .collect();
    let crates = function_crates();
    assert_eq!(
        sized, crates,
        "functions/ crates and Cloud Run services differ"
    );

    // Variables every service gets: the first object merged into the module's env.
    let common: BTreeSet<String> = body
        .blocks()
        .filter(|b| {
            b.identifier() == "module" && b.labels().iter().any(|l| l.as_str() == "service")
        })
        .flat_map(|b| b.body().attributes())
        .filter(|a| a.key() == "env")
        .filter_map(|a| match a.expr() {
            Expression::FuncCall(call) => call.args.first().map(object_keys),
            _ => None,
        })
        .flatten()
        .collect();
    assert!(common.contains("GCP_PROJECT"), "{common:?}");

    for function in &crates {
        let mut provided = common.clone();
        provided.extend(nested_keys(&body, "function_env", function));
        provided.extend(nested_keys(&body, "function_secrets", function));
        let missing: Vec<&str> = required_env(function)
            .iter()
            .copied()
            .filter(|v| !provided.contains(*v))
            .collect();
        assert!(
            missing.is_empty(),
            "{function} needs {missing:?}; its service provides {provided:?}"
        );
    }
}

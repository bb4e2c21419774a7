//! The deployment matches the code: every function crate is a Cloud Run
//! service in `infra/services.tf` or a Cloud Run job (a
//! `google_cloud_run_v2_job` in `infra/`), and each one's environment covers
//! the variables its binary cannot start without.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use hcl::expr::{Expression, ObjectKey, TraversalOperator};

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

/// Crates under `functions/` that are not deployed at all.
const NOT_DEPLOYED: &[&str] = &["local"];

fn required_env(function: &str) -> &'static [&'static str] {
    match function {
        "inbound" => inbound::REQUIRED_ENV,
        "status" => status::REQUIRED_ENV,
        "sender" => sender::REQUIRED_ENV,
        "fanout" => fanout::REQUIRED_ENV,
        "api" => api::REQUIRED_ENV,
        "ingest" => ingest::REQUIRED_ENV,
        "events" => events::REQUIRED_ENV,
        "lifecycle" => lifecycle::REQUIRED_ENV,
        // A binary without a library: all it reads is DatabaseConfig.
        "migrate" => &["DATABASE_URL"],
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
        .filter(|n| !NOT_DEPLOYED.contains(&n.as_str()))
        .collect()
}

/// `local.images["<crate>"]` → the crate.
fn image_crate(e: &Expression) -> Option<String> {
    let Expression::Traversal(t) = e else {
        return None;
    };
    match (&t.expr, t.operators.as_slice()) {
        (
            Expression::Variable(local),
            [
                TraversalOperator::GetAttr(images),
                TraversalOperator::Index(Expression::String(function)),
            ],
        ) if local.as_str() == "local" && images.as_str() == "images" => Some(function.clone()),
        _ => None,
    }
}

/// The blocks reached from `body` through the nested block names in `path`.
fn nested_blocks<'a>(body: &'a hcl::Body, path: &[&str]) -> Vec<&'a hcl::Body> {
    match path.split_first() {
        None => vec![body],
        Some((first, rest)) => body
            .blocks()
            .filter(|b| b.identifier() == *first)
            .flat_map(|b| nested_blocks(b.body(), rest))
            .collect(),
    }
}

/// Every `google_cloud_run_v2_job` in `infra/*.tf`: the crate its image is
/// built from → the names its container's literal `env` blocks set (a
/// `dynamic "env"` holds only optional settings).
fn cloud_run_jobs() -> BTreeMap<String, BTreeSet<String>> {
    let mut jobs = BTreeMap::new();
    let infra = Path::new(ROOT).join("infra");
    for entry in std::fs::read_dir(&infra).unwrap().filter_map(|e| e.ok()) {
        let path = entry.path();
        if path.extension().is_none_or(|x| x != "tf") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        if !text.contains("google_cloud_run_v2_job") {
            continue;
        }
        let body: hcl::Body = hcl::from_str(&text)
            .unwrap_or_else(|e| panic!("{} parses as HCL: {e}", path.display()));
        let resources = body.blocks().filter(|b| {
            b.identifier() == "resource"
                && b.labels().first().map(|l| l.as_str()) == Some("google_cloud_run_v2_job")
        });
        for job in resources {
            for container in nested_blocks(job.body(), &["template", "template", "containers"]) {
                let Some(function) = container
                    .attributes()
                    .find(|a| a.key() == "image")
                    .and_then(|a| image_crate(a.expr()))
                else {
                    panic!(
                        "{}: a job's image is not local.images[\"<crate>\"]",
                        path.display()
                    );
                };
                let env = container
                    .blocks()
                    .filter(|b| b.identifier() == "env")
                    .filter_map(|b| b.body().attributes().find(|a| a.key() == "name"))
                    .filter_map(|a| match a.expr() {
                        Expression::String(name) => Some(name.clone()),
                        _ => None,
                    })
                    .collect();
                jobs.insert(function, env);
            }
        }
    }
    jobs
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
    let jobs = cloud_run_jobs();
    let crates: BTreeSet<String> = function_crates()
        .into_iter()
        .filter(|c| !jobs.contains_key(c))
        .collect();
    assert_eq!(
        sized, crates,
        "functions/ crates that are not Cloud Run jobs and Cloud Run services differ"
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

#[test]
fn every_job_crate_has_a_cloud_run_job_with_the_environment_it_requires() {
    let jobs = cloud_run_jobs();
    assert!(jobs.contains_key("migrate"), "{jobs:?}");
    let crates = function_crates();

    for (function, env) in &jobs {
        assert!(
            crates.contains(function),
            "infra/ runs a job from functions/{function}, which does not exist"
        );
        let missing: Vec<&str> = required_env(function)
            .iter()
            .copied()
            .filter(|v| !env.contains(*v))
            .collect();
        assert!(
            missing.is_empty(),
            "the {function} job needs {missing:?}; it provides {env:?}"
        );
    }
}

//! The rate limiter over TLS, as Memorystore with in-transit encryption
//! serves it: a private redis-server with a certificate from a CA of the
//! test's own, trusted through `REDIS_CA_CERT`, and refused without it.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use shared::config::{Env, RedisConfig};
use shared::ratelimit::{Decision, Limit, Limiter};

/// A CA and a server certificate for 127.0.0.1, made with openssl.
fn certificates(dir: &Path) {
    let run = |args: &[&str]| {
        let ok = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("openssl is installed")
            .success();
        assert!(ok, "openssl {args:?}");
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=test CA",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "san.ext",
    ]);
}

fn config(url: &str, ca: Option<&str>) -> Result<RedisConfig, shared::config::ConfigError> {
    let mut pairs = vec![("REDIS_URL", url.to_owned())];
    if let Some(ca) = ca {
        pairs.push(("REDIS_CA_CERT", ca.to_owned()));
    }
    RedisConfig::from_env(&Env::from_pairs(pairs))
}

#[tokio::test]
async fn the_limiter_speaks_tls_with_auth_trusting_the_configured_ca() {
    let dir = std::env::temp_dir().join(format!("redis-tls-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    certificates(&dir);
    let port = e2e::pubsub_emulator::free_port().unwrap();
    let path = |f: &str| dir.join(f).display().to_string();
    let mut server = Command::new("redis-server")
        .args([
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
        ])
        .args([
            "--tls-cert-file",
            &path("server.pem"),
            "--tls-key-file",
            &path("server.key"),
        ])
        .args([
            "--tls-ca-cert-file",
            &path("ca.pem"),
            "--tls-auth-clients",
            "no",
        ])
        .args([
            "--requirepass",
            "s3cret",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server is installed");
    let ca = std::fs::read_to_string(dir.join("ca.pem")).unwrap();
    let url = format!("rediss://:s3cret@127.0.0.1:{port}/");

    let started = Instant::now();
    let limiter = loop {
        match Limiter::from_config(&config(&url, Some(&ca)).unwrap()).await {
            Ok(l) => break l,
            Err(_) if started.elapsed() < Duration::from_secs(10) => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => panic!("TLS redis-server did not answer: {e}"),
        }
    };
    let limit = [Limit {
        key: "tls".into(),
        per_second: 1.0,
        burst: 1,
    }];
    assert_eq!(limiter.acquire(&limit).await.unwrap(), Decision::Granted);
    assert!(matches!(
        limiter.acquire(&limit).await.unwrap(),
        Decision::Wait(_)
    ));

    // A server certificate from a CA nobody configured is not trusted.
    let stranger = std::fs::read_to_string(dir.join("server.pem")).unwrap();
    assert!(
        Limiter::from_config(&config(&url, Some(&stranger)).unwrap())
            .await
            .is_err()
    );
    // The wrong auth string is refused.
    let wrong = format!("rediss://:nope@127.0.0.1:{port}/");
    assert!(
        Limiter::from_config(&config(&wrong, Some(&ca)).unwrap())
            .await
            .is_err()
    );
    // A CA without TLS, or a URL of another scheme, stops the binary at start.
    assert!(config("redis://127.0.0.1:6379/", Some(&ca)).is_err());
    assert!(config("http://127.0.0.1:6379/", None).is_err());
    assert!(config(&url, Some("not a certificate")).is_err());

    server.kill().unwrap();
    server.wait().unwrap();
    std::fs::remove_dir_all(&dir).ok();
}

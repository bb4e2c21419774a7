//! The demo: a whole campaign on the local stack, told through the same
//! edges production uses — a file in the bucket, the `/v1` API with a key,
//! signed Twilio webhooks — ending in a summary of every recipient.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};
use shared::twilio::compute_signature;
use sqlx::PgPool;

use crate::stack::Running;

pub struct DemoOptions {
    pub users: usize,
    pub timeout: Duration,
}

const NAMES: &[&str] = &[
    "Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Ken", "Radia", "Linus",
];
const CITIES: &[&str] = &["Lisbon", "Osaka", "Austin", "Nairobi", "Lyon", "Recife"];
const PLANS: &[&str] = &["gold", "silver", "bronze", "free"];
const TIMEZONES: &[&str] = &[
    "America/New_York",
    "Europe/London",
    "Asia/Tokyo",
    "Australia/Sydney",
    "America/Sao_Paulo",
];

/// A CSV of `n` users with a few rows a person would get wrong.
pub fn generate_csv(n: usize, batch: &str) -> String {
    let mut csv = String::from("phone_number,first_name,city,plan,timezone,consent,batch\n");
    for i in 0..n {
        let phone = format!(
            "+1{}555{:04}",
            [415, 628, 650, 510][i / 10_000 % 4],
            i % 10_000
        );
        // A few users lack a first name (their message cannot render); a few opted out.
        let name = if i % 50 == 9 {
            ""
        } else {
            NAMES[i % NAMES.len()]
        };
        let consent = match i % 40 {
            3 | 23 => "opted_out",
            13 => "",
            _ => "opted_in",
        };
        let _ = writeln!(
            csv,
            "{phone},{name},{},{},{},{consent},{batch}",
            CITIES[i % CITIES.len()],
            PLANS[i % PLANS.len()],
            TIMEZONES[i % TIMEZONES.len()]
        );
    }
    let _ = writeln!(csv, "+1555,Bad,Nowhere,gold,UTC,opted_in,{batch}");
    let _ = writeln!(csv, "call-me-maybe,Bad,Nowhere,gold,UTC,opted_in,{batch}");
    let _ = writeln!(
        csv,
        "+14155550001,Extra,Field,gold,UTC,opted_in,{batch},surprise"
    );
    let _ = writeln!(csv, "+16505559999,Zed,Mars,gold,Mars/Base,opted_in,{batch}");
    csv
}

struct Api {
    http: reqwest::Client,
    base: String,
    key: String,
}

impl Api {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.base))
            .bearer_auth(&self.key);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let response = req.send().await?;
        let status = response.status();
        let value: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            bail!("{method} {path} answered {status}: {value}");
        }
        Ok(value)
    }

    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.call(reqwest::Method::GET, path, None).await
    }

    async fn post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }
}

/// Runs the story; `Ok(true)` when every recipient is accounted for.
pub async fn run(stack: &Running, options: &DemoOptions) -> anyhow::Result<bool> {
    let api = Api {
        http: reqwest::Client::new(),
        base: stack.base_url.clone(),
        key: stack.api_key.clone(),
    };
    let started = Instant::now();
    println!("Event Stream Engine demo on {}", stack.base_url);

    // 1. An analyst drops a file of users into the bucket.
    let object = format!(
        "demo-users-{}.csv",
        chrono::Utc::now().format("%Y%m%dT%H%M%S%3f")
    );
    let partial = stack.inbox.join(format!("{object}.partial"));
    // Every row carries this run's batch, so the segment is this file's users
    // even when the local database kept earlier runs.
    let batch = object.trim_end_matches(".csv").to_owned();
    std::fs::write(&partial, generate_csv(options.users, &batch))
        .context("writing the demo CSV")?;
    std::fs::rename(&partial, stack.inbox.join(&object))?;
    println!(
        "1. wrote {} users (and 4 bad rows) to the inbox as {object}",
        options.users
    );
    let import = wait_for_import(&api, &object, options.timeout).await?;
    println!(
        "   imported: {} rows read, {} new, {} updated, {} duplicates, {} rejected",
        import["rows_read"],
        import["inserted"],
        import["updated"],
        import["duplicates"],
        import["rejected"]
    );

    // 2. A few users write to us first: their 24-hour window is open.
    let mut opened = 0;
    if let Some(token) = stack.simulated_twilio_token() {
        for i in 0..5 {
            let from = format!("whatsapp:+1415555{:04}", i * 40);
            let sid = format!("SMdemo{}{i}", chrono::Utc::now().timestamp_micros());
            let params = [
                ("MessageSid", sid.as_str()),
                ("From", from.as_str()),
                ("To", "whatsapp:+14155238886"),
                ("Body", "Hi! Any offers?"),
            ];
            if post_signed(
                &api.http,
                &stack.base_url,
                token,
                "/webhooks/inbound",
                &params,
            )
            .await?
            {
                opened += 1;
            }
        }
    }
    println!(
        "2. {opened} users wrote in on WhatsApp (signed inbound webhooks): free-form messages for them"
    );

    // 3. An operator defines who gets what, through the API.
    let segment = api
        .post("/v1/segments", json!({"name": format!("paying-{object}"), "definition": {"all": [{"attribute": "batch", "eq": batch}, {"attribute": "plan", "in": ["gold", "silver", "bronze"]}]}}))
        .await?;
    let template = api
        .post(
            "/v1/templates",
            json!({
                "name": format!("offer-{object}"),
                "body": "Hi {first_name}! Your {plan} plan has a new offer. Reply STOP to opt out.",
                "content_sid": "HX0123456789abcdef0123456789abcdef",
                "content_variables": {"1": "{first_name}", "2": "{plan}"},
            }),
        )
        .await?;
    // Quiet hours around the current hour in Tokyo, so the Tokyo users wait for morning.
    let tokyo = chrono::Utc::now().with_timezone(&"Asia/Tokyo".parse::<chrono_tz::Tz>()?);
    let quiet = |h: i64| {
        (tokyo + chrono::Duration::hours(h))
            .format("%H:%M")
            .to_string()
    };
    let campaign = api
        .post(
            "/v1/campaigns",
            json!({
                "name": format!("Spring offer ({object})"),
                "segment_id": segment["id"],
                "template_id": template["id"],
                "rate_per_second": 400,
                "quiet_hours_start": quiet(-1),
                "quiet_hours_end": quiet(1),
                "default_timezone": "UTC",
            }),
        )
        .await?;
    let id = campaign["id"].as_str().context("campaign id")?.to_owned();
    api.post(&format!("/v1/campaigns/{id}/launch"), json!({}))
        .await?;
    let launched = Instant::now();
    println!("3. segment, template and campaign created with the API key; campaign {id} launched");

    // 4. Watch it go.
    let accounted = watch(&api, &stack.db, &id, options.timeout).await?;
    let elapsed = launched.elapsed();
    println!();
    let stats = api.get(&format!("/v1/campaigns/{id}/stats")).await?;
    let detail = api
        .get(&format!(
            "/v1/imports/{}",
            import["id"].as_str().unwrap_or_default()
        ))
        .await?;
    print_summary(
        &import,
        &detail,
        &stats,
        &stack.db,
        &id,
        elapsed,
        started.elapsed(),
    )
    .await?;
    let triggered = triggered_story(&api, &object, options.timeout).await?;
    Ok(accounted && triggered)
}

/// Step 5, a triggered campaign: an order ships (an event posted as any
/// other system would, shown as the curl command) and the person who wrote in
/// at step 2 gets a WhatsApp message about that order.
async fn triggered_story(api: &Api, object: &str, timeout: Duration) -> anyhow::Result<bool> {
    let template = api
        .post(
            "/v1/templates",
            json!({
                "name": format!("shipped-{object}"),
                "body": "Hi {first_name}, order {{ event.order_id }} has shipped: it arrives {{ event.eta }}.",
            }),
        )
        .await?;
    let campaign = api
        .post(
            "/v1/campaigns",
            json!({
                "name": format!("Order shipped ({object})"),
                "template_id": template["id"],
                "trigger": {"event": "order.shipped", "per_person": "every_event",
                            "filter": {"property": "order_id", "exists": true}},
            }),
        )
        .await?;
    let id = campaign["id"].as_str().context("campaign id")?.to_owned();
    api.post(&format!("/v1/campaigns/{id}/launch"), json!({}))
        .await?;
    let deadline = Instant::now() + timeout;
    while api.get(&format!("/v1/campaigns/{id}")).await?["state"] != "running" {
        if Instant::now() > deadline {
            bail!("the triggered campaign did not start");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let order = format!("A-{}", chrono::Utc::now().timestamp_millis() % 100_000);
    let event = json!({
        "phone_number": "+14155550000", "name": "order.shipped",
        "idempotency_key": format!("{order}-shipped"),
        "properties": {"order_id": order, "eta": "tomorrow"},
    });
    println!();
    println!("5. a triggered campaign listens for order.shipped; a shop reports one:");
    println!(
        "   curl -X POST {}/v1/events -H 'Authorization: Bearer $KEY' -H 'Content-Type: application/json' -d '{event}'",
        api.base
    );
    let posted = Instant::now();
    api.post("/v1/events", event).await?;
    loop {
        let page = api
            .get(&format!("/v1/messages?campaign_id={id}&limit=5"))
            .await?;
        if let Some(m) = page["data"].as_array().and_then(|rows| {
            rows.iter()
                .find(|m| m["twilio_sid"].is_string() || m["status"] == "skipped")
        }) {
            println!(
                "   {} ms later the simulated Twilio took {} for {}: {:?} ({})",
                posted.elapsed().as_millis(),
                m["twilio_sid"].as_str().unwrap_or("nothing"),
                m["phone_number"].as_str().unwrap_or_default(),
                m["body"].as_str().unwrap_or_default(),
                m["status"].as_str().unwrap_or_default(),
            );
            return Ok(m["twilio_sid"].is_string());
        }
        if Instant::now() > deadline {
            println!(
                "   no message reached Twilio within {} s",
                timeout.as_secs()
            );
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn post_signed(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    path: &str,
    params: &[(&str, &str)],
) -> anyhow::Result<bool> {
    let owned: Vec<(String, String)> = params
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let signature = compute_signature(token, &format!("{base}{path}"), &owned);
    let r = http
        .post(format!("{base}{path}"))
        .header("X-Twilio-Signature", signature)
        .form(params)
        .send()
        .await?;
    Ok(r.status().is_success())
}

async fn wait_for_import(api: &Api, object: &str, timeout: Duration) -> anyhow::Result<Value> {
    let deadline = Instant::now() + timeout;
    loop {
        let list = api.get("/v1/imports?limit=50").await?;
        if let Some(import) = list["data"]
            .as_array()
            .and_then(|rows| rows.iter().find(|r| r["object"] == object))
        {
            match import["state"].as_str() {
                Some("completed") => return Ok(import.clone()),
                Some("failed") => bail!("the import failed: {}", import["failure_reason"]),
                _ => {}
            }
        }
        if Instant::now() > deadline {
            bail!(
                "the import of {object} did not finish within {} s",
                timeout.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Recipients not yet at an end: not decided, in flight, or accepted by
/// Twilio and waiting for its callbacks. Deferred ones are accounted for:
/// their decision says why and until when.
async fn open_count(db: &PgPool, campaign: &str) -> anyhow::Result<(i64, i64)> {
    let row = sqlx::query!(
        r#"select count(*) as "total!",
                count(*) filter (where m.status in ('queued', 'sending', 'sent', 'accepted', 'scheduled')
                   or (m.status = 'pending' and not exists (
                       select 1 from decisions d where d.message_id = m.id and d.decision like 'deferred%')))
                   as "open!"
         from messages m where m.campaign_id = $1::text::uuid"#,
        campaign
    )
    .fetch_one(db)
    .await?;
    Ok((row.total, row.open))
}

async fn watch(api: &Api, db: &PgPool, campaign: &str, timeout: Duration) -> anyhow::Result<bool> {
    use std::io::IsTerminal;
    // On a terminal, a progress bar of the recipients accounted for, the
    // counts beside it; elsewhere (CI, a pipe) a plain line every few seconds.
    let bar = std::io::stdout().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "   {spinner} {elapsed:>4} [{bar:30}] {pos}/{len} accounted for\n   {msg}",
            )
            .expect("a valid progress template")
            .progress_chars("=> "),
        );
        bar.enable_steady_tick(Duration::from_millis(120));
        bar
    });
    let mut last_line = Instant::now() - Duration::from_secs(60);
    let deadline = Instant::now() + timeout;
    loop {
        let stats = api.get(&format!("/v1/campaigns/{campaign}/stats")).await?;
        let s = |k: &str| stats["by_status"][k].as_i64().unwrap_or(0);
        let (total, open) = open_count(db, campaign).await?;
        let counts = format!(
            "queued {:>5} │ sent {:>5} │ delivered {:>5} │ read {:>5} │ failed {:>4} │ skipped {:>4} │ waiting {:>5}",
            s("queued") + s("sending"),
            s("sent"),
            s("delivered"),
            s("read"),
            s("failed") + s("undelivered"),
            s("skipped"),
            open,
        );
        let done = total > 0 && open == 0;
        match &bar {
            Some(bar) => {
                bar.set_length(u64::try_from(total).unwrap_or(0));
                bar.set_position(u64::try_from(total - open).unwrap_or(0));
                bar.set_message(counts);
            }
            None if done || last_line.elapsed() >= Duration::from_secs(3) => {
                println!("   recipients {total:>5} │ {counts}");
                last_line = Instant::now();
            }
            None => {}
        }
        if done {
            if let Some(bar) = &bar {
                bar.finish();
            }
            return Ok(true);
        }
        if Instant::now() > deadline {
            if let Some(bar) = &bar {
                bar.abandon();
            }
            eprintln!(
                "{open} of {total} recipients are not accounted for after {} s",
                timeout.as_secs()
            );
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
}

async fn print_summary(
    import: &Value,
    detail: &Value,
    stats: &Value,
    db: &PgPool,
    campaign: &str,
    elapsed: Duration,
    total: Duration,
) -> anyhow::Result<()> {
    let n = |v: &Value| v.as_i64().unwrap_or(0);
    let status = |k: &str| n(&stats["by_status"][k]);
    let last_decisions: Vec<(String, i64)> = sqlx::query!(
        r#"select coalesce(last_decision, 'none') as "decision!", count(*) as "n!" from messages
         where campaign_id = $1::text::uuid group by 1 order by 2 desc"#,
        campaign
    )
    .fetch_all(db)
    .await?
    .into_iter()
    .map(|r| (r.decision, r.n))
    .collect();
    let by_reason = |prefix: &str| -> String {
        let parts: Vec<String> = last_decisions
            .iter()
            .filter(|(d, _)| {
                d.starts_with(prefix)
                    || (prefix == "skipped"
                        && (d == "needs_template_outside_window" || d == "cancelled"))
            })
            .map(|(d, c)| format!("{d} {c}"))
            .collect();
        if parts.is_empty() {
            "none".into()
        } else {
            parts.join(", ")
        }
    };
    let sum = |prefix: &str| -> i64 {
        last_decisions
            .iter()
            .filter(|(d, _)| {
                d.starts_with(prefix)
                    || (prefix == "skipped"
                        && (d == "needs_template_outside_window" || d == "cancelled"))
            })
            .map(|(_, c)| c)
            .sum()
    };
    let errors: BTreeMap<String, i64> =
        serde_json::from_value(stats["by_error_code"].clone()).unwrap_or_default();
    let errors = if errors.is_empty() {
        "none".to_owned()
    } else {
        errors
            .iter()
            .map(|(c, k)| format!("{c}: {k}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let sent = n(&stats["accepted_by_twilio"]);
    let rows: Vec<(&str, String, String)> = vec![
        (
            "imported",
            (n(&import["inserted"]) + n(&import["updated"]) + n(&import["unchanged"])).to_string(),
            format!(
                "{} rows read: {} new users, {} updated, {} duplicates merged",
                n(&import["rows_read"]),
                n(&import["inserted"]),
                n(&import["updated"]) + n(&import["unchanged"]),
                n(&import["duplicates"])
            ),
        ),
        (
            "rejected",
            n(&import["rejected"]).to_string(),
            String::new(),
        ),
        (
            "recipients",
            n(&stats["messages"]).to_string(),
            "users in the segment".into(),
        ),
        ("sent", sent.to_string(), "accepted by Twilio".into()),
        (
            "delivered",
            n(&stats["delivered"]).to_string(),
            format!(
                "delivery rate {:.1}%",
                stats["delivery_rate"].as_f64().unwrap_or(0.0) * 100.0
            ),
        ),
        (
            "read",
            n(&stats["read"]).to_string(),
            format!(
                "read rate {:.1}%",
                stats["read_rate"].as_f64().unwrap_or(0.0) * 100.0
            ),
        ),
        (
            "failed",
            (status("failed") + status("undelivered")).to_string(),
            format!("by error code: {errors}"),
        ),
        ("skipped", sum("skipped").to_string(), by_reason("skipped")),
        (
            "deferred",
            sum("deferred").to_string(),
            by_reason("deferred"),
        ),
        (
            "elapsed",
            format!("{:.1} s", elapsed.as_secs_f64()),
            format!(
                "launch to every recipient accounted for ({:.1} s in all)",
                total.as_secs_f64()
            ),
        ),
        (
            "sends/s",
            format!("{:.0}", sent as f64 / elapsed.as_secs_f64().max(0.001)),
            String::new(),
        ),
    ];
    println!(
        "┌────────────┬─────────┬──────────────────────────────────────────────────────────────"
    );
    for (label, value, note) in rows {
        println!("│ {label:<10} │ {value:>7} │ {note}");
        if label == "rejected" {
            for r in detail["rejects"].as_array().into_iter().flatten().take(3) {
                println!(
                    "│ {:<10} │ {:>7} │   line {}: {}",
                    "",
                    "",
                    r["line_number"],
                    r["reason"].as_str().unwrap_or_default()
                );
            }
        }
    }
    println!(
        "└────────────┴─────────┴──────────────────────────────────────────────────────────────"
    );
    Ok(())
}

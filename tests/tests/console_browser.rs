//! The console in a real browser: headless Chromium (Debian's) through
//! chromedriver, against the local stack with the simulated Twilio. One walk
//! through what an operator does, a screenshot of every page under
//! `target/console-screenshots/`, and no console error allowed anywhere.

use std::path::PathBuf;
use std::time::Duration;

use e2e::webdriver::Browser;
use shared::config::Env;
use sqlx::PgPool;

use crate::support::{MIGRATOR, url_of};

const WAIT: Duration = Duration::from_secs(60);
const PEOPLE: usize = 40;

fn screenshots() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/console-screenshots")
}

/// Fails on any error the page logged since the last look.
async fn no_console_errors(browser: &Browser, page: &str) {
    let errors = browser.console_errors().await.expect("browser log");
    assert!(errors.is_empty(), "console errors on {page}: {errors:#?}");
}

async fn shot(browser: &Browser, name: &str) {
    browser
        .screenshot(&screenshots().join(format!("{name}.png")))
        .await
        .expect("screenshot");
    no_console_errors(browser, name).await;
}

async fn fill(browser: &Browser, css: &str, text: &str) {
    let e = browser.find(css).await.expect("field");
    browser.clear(&e).await.expect("clear");
    browser.send_keys(&e, text).await.expect("type");
}

async fn click(browser: &Browser, css: &str) {
    let e = browser.find(css).await.expect("button");
    browser.click(&e).await.expect("click");
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn an_operator_walks_the_console(db: PgPool) {
    if let Err(why) = Browser::available() {
        panic!("the browser test needs Chromium and chromedriver: {why}");
    }
    let data = std::env::temp_dir().join(format!("console-browser-{}", uuid::Uuid::new_v4()));
    let stack = local::stack::start(&Env::from_pairs([
        ("DATABASE_URL", url_of(&db)),
        ("LOCAL_PORT", "0".to_owned()),
        ("LOCAL_DATA_DIR", data.display().to_string()),
        ("LOCAL_TICK_MS", "200".to_owned()),
        // Half the sends fail, so there is something to export.
        ("SIM_FAILURE_RATE", "0.5".to_owned()),
        ("RUST_LOG", "warn".to_owned()),
    ]))
    .await
    .expect("local stack");
    let base = stack.base_url.clone();
    let browser = Browser::start().await.expect("chromedriver and Chromium");

    // Sign in: the overview asks for it first.
    browser
        .goto(&format!("{base}/console/overview"))
        .await
        .unwrap();
    browser.wait_for("#api_key", WAIT).await.unwrap();
    shot(&browser, "01-sign-in").await;
    fill(&browser, "#api_key", &stack.api_key).await;
    click(&browser, "form button[type=submit]").await;
    browser.wait_for_text("h1", "Overview", WAIT).await.unwrap();
    shot(&browser, "02-overview").await;

    // Upload a CSV and watch its import finish (one bad row).
    let csv = data.join("people-upload.csv");
    let mut rows = String::from("phone_number,first_name,plan,consent\n");
    for i in 0..PEOPLE {
        rows.push_str(&format!("+1415556{i:04},Person{i},gold,opted_in\n"));
    }
    rows.push_str("not-a-number,Nobody,gold,opted_in\n");
    std::fs::write(&csv, rows).unwrap();
    browser
        .goto(&format!("{base}/console/imports"))
        .await
        .unwrap();
    let file = browser.wait_for("#file", WAIT).await.unwrap();
    browser
        .send_keys(&file, &csv.display().to_string())
        .await
        .unwrap();
    click(&browser, "#upload").await;
    browser
        .wait_for_text("#import-state", "completed", WAIT)
        .await
        .unwrap();
    let inserted = browser
        .text(&browser.find("#inserted").await.unwrap())
        .await
        .unwrap();
    assert_eq!(inserted, PEOPLE.to_string());
    browser
        .wait_for_text("#rejects", "not-a-number", WAIT)
        .await
        .unwrap();
    shot(&browser, "03-import").await;

    // A segment, previewed, with its validation error first.
    browser
        .goto(&format!("{base}/console/segments/new"))
        .await
        .unwrap();
    fill(&browser, "#name", "Gold").await;
    fill(
        &browser,
        "#definition",
        r#"{"attribute": "plan", "eqq": "gold"}"#,
    )
    .await;
    click(&browser, "#preview-segment").await;
    browser
        .wait_for_text("#err-definition", "unknown operator", WAIT)
        .await
        .unwrap();
    // The form comes back 422 with the error at its field; Chromium logs any
    // 4xx answer as an error, so exactly that one is expected here.
    let logged = browser.console_errors().await.unwrap();
    assert!(
        logged.len() == 1
            && logged[0].message.contains("segments/preview")
            && logged[0].message.contains("422"),
        "{logged:#?}"
    );
    fill(
        &browser,
        "#definition",
        r#"{"attribute": "plan", "eq": "gold"}"#,
    )
    .await;
    click(&browser, "#preview-segment").await;
    browser
        .wait_for_text("#preview-count", &PEOPLE.to_string(), WAIT)
        .await
        .unwrap();
    shot(&browser, "04-segment").await;
    click(&browser, "#save-segment").await;
    browser
        .wait_for_text(".notice", "Saved", WAIT)
        .await
        .unwrap();

    // A template for people inside the window and out.
    browser
        .goto(&format!("{base}/console/templates/new"))
        .await
        .unwrap();
    fill(&browser, "#name", "Hello gold").await;
    fill(&browser, "#body", "Hi {{ first_name }}, welcome to gold").await;
    fill(
        &browser,
        "#content_sid",
        "HX0123456789abcdef0123456789abcdef",
    )
    .await;
    fill(
        &browser,
        "#content_variables",
        r#"{"1": "{{ first_name }}"}"#,
    )
    .await;
    click(&browser, "#save-template").await;
    browser
        .wait_for_text(".notice", "Saved", WAIT)
        .await
        .unwrap();
    fill(&browser, "#phone_number", "+14155560003").await;
    click(&browser, "#preview-template").await;
    browser.wait_for("#template-preview", WAIT).await.unwrap();
    browser
        .wait_for_text("#template-preview", "Person3", WAIT)
        .await
        .unwrap();
    shot(&browser, "05-template").await;

    // The campaign: the audience shows as the segment is chosen; dry run; launch.
    browser
        .goto(&format!("{base}/console/campaigns/new"))
        .await
        .unwrap();
    fill(&browser, "#name", "Gold welcome").await;
    browser.select_option("#segment_id", "Gold").await.unwrap();
    browser
        .wait_for_text("#audience-count", &PEOPLE.to_string(), WAIT)
        .await
        .unwrap();
    browser
        .select_option("#template_id", "Hello gold")
        .await
        .unwrap();
    fill(&browser, "#rate_per_second", "200").await;
    shot(&browser, "06-new-campaign").await;
    click(&browser, "#campaign-form button[type=submit]").await;
    click_when_ready(&browser, "#dry-run").await;
    browser
        .wait_for_text("#dry-run-decisions", "would_send", WAIT)
        .await
        .unwrap();
    let dry = browser
        .text(&browser.find("#dry-run-decisions").await.unwrap())
        .await
        .unwrap();
    assert!(dry.contains(&format!("would_send {PEOPLE}")), "{dry}");
    shot(&browser, "07-dry-run").await;
    click(&browser, "#action-launch").await;
    // The funnel refreshes itself while the campaign runs, and the page
    // reloads once it has finished.
    browser
        .wait_for_text("#campaign-state", "", WAIT)
        .await
        .unwrap();
    browser
        .wait_for_text("#completed-at", "UTC", WAIT)
        .await
        .unwrap();
    browser
        .wait_for_text("#state-now", "completed", WAIT)
        .await
        .unwrap();
    let recipients = browser
        .text(&browser.find("#n-recipients").await.unwrap())
        .await
        .unwrap();
    assert_eq!(recipients, PEOPLE.to_string());
    let campaign_url = browser.current_url().await.unwrap();
    browser.wait_for("#failures", WAIT).await.unwrap();
    shot(&browser, "08-campaign").await;

    // A test send to one person, through the simulated Twilio.
    fill(&browser, "#test_phone", "+14155560005").await;
    click(&browser, "#test-send").await;
    browser
        .wait_for_text("#test-send-result", "sent to +14155560005", WAIT)
        .await
        .unwrap();
    shot(&browser, "08b-test-send").await;

    // Everyone whose message failed, as the export gives them.
    let export = browser
        .execute(
            "const x = new XMLHttpRequest(); x.open('GET', arguments[0], false); x.send(); return x.status + '\\n' + x.responseText;",
            vec![serde_json::json!(format!("{campaign_url}/recipients.csv?outcome=failed"))],
        )
        .await
        .unwrap();
    let export = export.as_str().unwrap().to_owned();
    let mut lines = export.lines();
    assert_eq!(lines.next(), Some("200"));
    assert!(
        lines
            .next()
            .unwrap()
            .starts_with("phone_number,status,error_code")
    );
    let exported: Vec<&str> = lines.collect();
    let failed: i64 = sqlx::query_scalar(
        "select count(*) from messages where status in ('failed', 'undelivered')",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert!(failed > 0, "the simulator failed none of {PEOPLE}");
    assert_eq!(exported.len() as i64, failed, "{export}");

    // One person, and why they got what they got.
    let phone = exported[0].split(',').next().unwrap().to_owned();
    browser
        .goto(&format!(
            "{base}/console/people?q={}",
            phone.replace('+', "%2B")
        ))
        .await
        .unwrap();
    browser.wait_for("#people a", WAIT).await.unwrap();
    click(&browser, "#people a").await;
    browser
        .wait_for_text("#h-messages", "Messages and why", WAIT)
        .await
        .unwrap();
    browser
        .wait_for_text(".message", "Gold welcome", WAIT)
        .await
        .unwrap();
    browser
        .wait_for_text(".message h3", "(error ", WAIT)
        .await
        .unwrap();
    browser
        .wait_for_text(".decisions", "sent", WAIT)
        .await
        .unwrap();
    shot(&browser, "09-person").await;

    browser
        .goto(&format!("{base}/console/overview"))
        .await
        .unwrap();
    browser
        .wait_for_text("#h-errors", "Top error codes", WAIT)
        .await
        .unwrap();
    shot(&browser, "10-overview-after").await;

    // On a phone: nothing wider than the screen (tables scroll inside themselves).
    browser.set_window_size(390, 844).await.unwrap();
    for (name, url) in [
        ("11-phone-campaign", campaign_url.clone()),
        ("12-phone-overview", format!("{base}/console/overview")),
    ] {
        browser.goto(&url).await.unwrap();
        browser.wait_for("main h1", WAIT).await.unwrap();
        let fits = browser
            .execute(
                "return document.documentElement.scrollWidth <= window.innerWidth + 1;",
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(
            fits,
            serde_json::json!(true),
            "{name} is wider than a phone"
        );
        shot(&browser, name).await;
    }

    browser.quit().await.unwrap();
    stack.stop().await;
    std::fs::remove_dir_all(&data).ok();
}

/// Clicks once the page that has `css` has loaded (after a redirect).
async fn click_when_ready(browser: &Browser, css: &str) {
    let e = browser.wait_for(css, WAIT).await.expect("element appears");
    browser.click(&e).await.expect("click");
}

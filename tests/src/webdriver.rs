//! A small W3C WebDriver client driving headless Chromium through
//! `chromedriver`, for the end-to-end browser tests. Loopback only.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use reqwest::Method;
use serde_json::{Value, json};
use tokio::process::{Child, Command};

/// The key W3C WebDriver puts an element reference under.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A chromedriver process with one browser session on it.
pub struct Browser {
    /// Killed on drop, which also ends the browser it started.
    child: Child,
    http: reqwest::Client,
    base: String,
    session: String,
}

/// A W3C element reference id.
#[derive(Debug, Clone)]
pub struct Element(String);

impl Element {
    /// The session-relative path of this element's endpoint `rest`.
    fn at(&self, rest: &str) -> String {
        format!("/element/{}/{rest}", self.0)
    }
}

/// The locator body for a CSS selector.
fn by_css(css: &str) -> Option<Value> {
    Some(json!({"using": "css selector", "value": css}))
}

/// `value` as a string, or an error naming `what` it was meant to be.
fn string(value: Value, what: &str) -> anyhow::Result<String> {
    match value {
        Value::String(s) => Ok(s),
        other => bail!("{what} is not a string: {other}"),
    }
}

/// One browser console entry.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct LogEntry {
    pub level: String,
    pub message: String,
}

fn chromedriver_bin() -> String {
    std::env::var("CHROMEDRIVER_BIN").unwrap_or_else(|_| "chromedriver".to_owned())
}

fn chromium_bin() -> String {
    std::env::var("CHROMIUM_BIN").unwrap_or_else(|_| {
        let packaged = "/usr/lib/chromium/chromium";
        let bin = if Path::new(packaged).is_file() {
            packaged
        } else {
            "/usr/bin/chromium"
        };
        bin.to_owned()
    })
}

/// `program` as a path, or looked up on `PATH` when it names no directory.
fn find_program(program: &str) -> Option<PathBuf> {
    if program.contains('/') {
        return Some(PathBuf::from(program)).filter(|p| p.is_file());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// Sends one WebDriver request and returns the answer's `value`, or an error
/// with the W3C error code and message.
async fn request(
    http: &reqwest::Client,
    method: Method,
    url: &str,
    body: Option<Value>,
) -> anyhow::Result<Value> {
    let body = match body {
        Some(body) => Some(body),
        None if method == Method::POST => Some(json!({})),
        None => None,
    };
    let mut req = http.request(method.clone(), url);
    if let Some(body) = &body {
        req = req.json(body);
    }
    let sent = async {
        let resp = req.send().await?;
        Ok::<_, reqwest::Error>((resp.status(), resp.text().await?))
    };
    let (status, text) = sent.await.with_context(|| format!("{method} {url}"))?;
    let mut answer: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    let value = answer.get_mut("value").map(Value::take).unwrap_or_default();
    if let Some(code) = value.get("error").and_then(Value::as_str) {
        let message = value.get("message").and_then(Value::as_str).unwrap_or("");
        bail!("{method} {url}: {code}: {message} (HTTP {status})");
    }
    if !status.is_success() {
        bail!("{method} {url}: HTTP {status}: {text}");
    }
    Ok(value)
}

impl Browser {
    /// Starts chromedriver on a free loopback port and opens a headless
    /// Chromium session on it. `CHROMEDRIVER_BIN` and `CHROMIUM_BIN` override
    /// the binaries.
    pub async fn start() -> anyhow::Result<Browser> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let bin = chromedriver_bin();
        let mut child = Command::new(&bin)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {bin}"))?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .no_proxy()
            .build()?;
        let base = format!("http://127.0.0.1:{port}");

        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(exit) = child.try_wait()? {
                bail!("chromedriver on port {port} exited before ready: {exit}");
            }
            let status = request(&http, Method::GET, &format!("{base}/status"), None).await;
            if let Ok(status) = status
                && status.get("ready").and_then(Value::as_bool) == Some(true)
            {
                break;
            }
            if Instant::now() >= deadline {
                bail!("chromedriver on port {port} was not ready within 10 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:loggingPrefs": {"browser": "ALL"},
            "goog:chromeOptions": {
                "binary": chromium_bin(),
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,1000", "--lang=en-US"],
            },
        }}});
        let url = format!("{base}/session");
        let created = request(&http, Method::POST, &url, Some(capabilities))
            .await
            .context("creating a browser session")?;
        let session = created
            .get("sessionId")
            .and_then(Value::as_str)
            .with_context(|| format!("no sessionId in new session answer: {created}"))?
            .to_owned();
        Ok(Browser {
            child,
            http,
            base,
            session,
        })
    }

    /// `Ok` when chromedriver and a Chromium binary are present, else the
    /// reason to skip.
    pub fn available() -> Result<(), String> {
        let driver = chromedriver_bin();
        if find_program(&driver).is_none() {
            return Err(format!("{driver} not found; set CHROMEDRIVER_BIN"));
        }
        let chromium = chromium_bin();
        if !Path::new(&chromium).is_file() {
            return Err(format!("{chromium} not found; set CHROMIUM_BIN"));
        }
        Ok(())
    }

    async fn command(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        request(&self.http, method, &url, body).await
    }

    /// Navigates to `url` and waits for the page load.
    pub async fn goto(&self, url: &str) -> anyhow::Result<()> {
        let body = Some(json!({"url": url}));
        self.command(Method::POST, "/url", body).await?;
        Ok(())
    }

    /// The URL of the current page.
    pub async fn current_url(&self) -> anyhow::Result<String> {
        let url = self.command(Method::GET, "/url", None).await?;
        string(url, "current url")
    }

    /// Resizes the browser window (CSS pixels), e.g. to a phone's width.
    pub async fn set_window_size(&self, width: u32, height: u32) -> anyhow::Result<()> {
        let rect = Some(json!({"width": width, "height": height}));
        self.command(Method::POST, "/window/rect", rect).await?;
        Ok(())
    }

    /// The first element matching `css`.
    pub async fn find(&self, css: &str) -> anyhow::Result<Element> {
        let found = self
            .command(Method::POST, "/element", by_css(css))
            .await
            .with_context(|| format!("finding {css:?}"))?;
        element_of(&found)
    }

    /// Every element matching `css`, in document order.
    pub async fn find_all(&self, css: &str) -> anyhow::Result<Vec<Element>> {
        self.find_all_under("", css).await
    }

    /// Elements matching `css` under the element at `scope` ("" for the document).
    async fn find_all_under(&self, scope: &str, css: &str) -> anyhow::Result<Vec<Element>> {
        let found = self
            .command(Method::POST, &format!("{scope}/elements"), by_css(css))
            .await
            .with_context(|| format!("finding all {css:?}"))?;
        let found = found
            .as_array()
            .with_context(|| format!("elements answer is not a list: {found}"))?;
        found.iter().map(element_of).collect()
    }

    /// Polls `find` every 100 ms until it succeeds or `timeout` passes.
    pub async fn wait_for(&self, css: &str, timeout: Duration) -> anyhow::Result<Element> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.find(css).await {
                Ok(element) => return Ok(element),
                Err(e) if Instant::now() >= deadline => {
                    return Err(e.context(format!("{css:?} did not appear within {timeout:?}")));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// Polls until the text of the first element matching `css` contains
    /// `needle`, and returns that text.
    pub async fn wait_for_text(
        &self,
        css: &str,
        needle: &str,
        timeout: Duration,
    ) -> anyhow::Result<String> {
        let deadline = Instant::now() + timeout;
        let mut last = String::from("(no element)");
        loop {
            if let Ok(element) = self.find(css).await
                && let Ok(text) = self.text(&element).await
            {
                if text.contains(needle) {
                    return Ok(text);
                }
                last = text;
            }
            if Instant::now() >= deadline {
                bail!("{css:?} did not contain {needle:?} within {timeout:?}; last text: {last:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Clicks the element's centre.
    pub async fn click(&self, e: &Element) -> anyhow::Result<()> {
        self.command(Method::POST, &e.at("click"), None).await?;
        Ok(())
    }

    /// Empties an input or textarea.
    pub async fn clear(&self, e: &Element) -> anyhow::Result<()> {
        self.command(Method::POST, &e.at("clear"), None).await?;
        Ok(())
    }

    /// Types `text` into the element; for a file input, `text` is the path.
    pub async fn send_keys(&self, e: &Element, text: &str) -> anyhow::Result<()> {
        let body = Some(json!({"text": text}));
        self.command(Method::POST, &e.at("value"), body).await?;
        Ok(())
    }

    /// The element's rendered text.
    pub async fn text(&self, e: &Element) -> anyhow::Result<String> {
        let text = self.command(Method::GET, &e.at("text"), None).await?;
        string(text, "element text")
    }

    /// The HTML attribute `name`, `None` when absent.
    pub async fn attribute(&self, e: &Element, name: &str) -> anyhow::Result<Option<String>> {
        let path = e.at(&format!("attribute/{name}"));
        let value = self.command(Method::GET, &path, None).await?;
        Ok(value.as_str().map(str::to_owned))
    }

    /// The DOM property `name`.
    pub async fn property(&self, e: &Element, name: &str) -> anyhow::Result<Value> {
        let path = e.at(&format!("property/{name}"));
        self.command(Method::GET, &path, None).await
    }

    /// Clicks the first `<option>` whose text contains `label` in the
    /// `<select>` matching `select_css`.
    pub async fn select_option(&self, select_css: &str, label: &str) -> anyhow::Result<()> {
        let select = self.find(select_css).await?;
        let mut seen = Vec::new();
        let scope = format!("/element/{}", select.0);
        for option in self.find_all_under(&scope, "option").await? {
            // The `text` property, unlike the rendered text, does not
            // depend on the list being open.
            let text = string(self.property(&option, "text").await?, "option text")?;
            if text.contains(label) {
                return self.click(&option).await;
            }
            seen.push(text);
        }
        bail!("no option containing {label:?} in {select_css:?}; options: {seen:?}")
    }

    /// Runs `script` as a function body with `args`, returning its result.
    pub async fn execute(&self, script: &str, args: Vec<Value>) -> anyhow::Result<Value> {
        let body = Some(json!({"script": script, "args": args}));
        self.command(Method::POST, "/execute/sync", body).await
    }

    /// Writes a PNG of the viewport to `path`, creating parent directories.
    pub async fn screenshot(&self, path: &Path) -> anyhow::Result<()> {
        let encoded = self.command(Method::GET, "/screenshot", None).await?;
        let png = base64::Engine::decode(
            &base64::engine::general_purpose::STANDARD,
            string(encoded, "screenshot")?,
        )
        .context("decoding screenshot")?;
        if let Some(parent) = path.parent() {
            tokio::fs::create_dir_all(parent).await?;
        }
        tokio::fs::write(path, png)
            .await
            .with_context(|| format!("writing {}", path.display()))
    }

    /// The browser console entries since the last call.
    pub async fn console_log(&self) -> anyhow::Result<Vec<LogEntry>> {
        let body = Some(json!({"type": "browser"}));
        let entries = self.command(Method::POST, "/se/log", body).await?;
        serde_json::from_value(entries).context("parsing browser log entries")
    }

    /// The console entries of level SEVERE since the last call.
    pub async fn console_errors(&self) -> anyhow::Result<Vec<LogEntry>> {
        let mut entries = self.console_log().await?;
        entries.retain(|entry| entry.level == "SEVERE");
        Ok(entries)
    }

    /// Deletes the session and kills chromedriver.
    pub async fn quit(mut self) -> anyhow::Result<()> {
        let deleted = self.command(Method::DELETE, "", None).await;
        let killed = self.child.kill().await;
        deleted?;
        killed.context("killing chromedriver")
    }
}

fn element_of(found: &Value) -> anyhow::Result<Element> {
    found
        .get(ELEMENT_KEY)
        .and_then(Value::as_str)
        .map(|id| Element(id.to_owned()))
        .with_context(|| format!("no element reference in {found}"))
}

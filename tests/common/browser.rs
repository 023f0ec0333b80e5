//! A real headless Chromium, driven over WebDriver, for tests that look at a page as a
//! person's browser does (the dashboard; CORS and HTTP caching as a browser applies them).
//!
//! `Browser::start()` starts Debian's `chromedriver` on a free loopback port and one
//! Chromium session in a new, empty profile, with the flags Chromium needs on a machine
//! without a network (no background networking, component updates or sync: without them it
//! waits on connections that never come). Everything is blocking, like the rest of the
//! harness: each call runs on the browser's own small runtime.
//!
//! ```ignore
//! let Some(b) = Browser::start() else { return }; // chromium missing: says so loudly
//! b.goto("http://127.0.0.1:9091/");
//! let title = b.js("return document.title", vec![]);
//! b.wait_for(Duration::from_secs(10), "return !!document.querySelector('#dashboard')");
//! assert!(b.console_errors().is_empty());
//! b.screenshot(&path);
//! ```

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fantoccini::wd::WebDriverCompatibleCommand;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

use super::{free_port, scratch_dir, spawn_listening, Proc};

/// Where Debian puts them (`apt-get install chromium chromium-driver`).
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: [&str; 2] = ["/usr/lib/chromium/chromium", "/usr/bin/chromium"];

/// One entry of the browser's console log.
#[derive(Debug, Clone)]
pub struct LogEntry {
    /// `SEVERE`, `WARNING`, `INFO`, `DEBUG`.
    pub level: String,
    pub message: String,
}

pub struct Browser {
    rt: tokio::runtime::Runtime,
    client: Option<Client>,
    _driver: Proc,
    pub profile: PathBuf,
}

/// chromedriver's console log command (`goog:loggingPrefs` must ask for the browser log).
#[derive(Debug)]
struct BrowserLog;

impl WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(
        &self,
        base: &url::Url,
        session: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base.join(&format!("session/{}/se/log", session.unwrap_or("")))
    }

    fn method_and_body(&self, _url: &url::Url) -> (http::Method, Option<String>) {
        (
            http::Method::POST,
            Some(json!({"type": "browser"}).to_string()),
        )
    }
}

impl Browser {
    /// A browser, or `None` (after a loud message) when Chromium or chromedriver is not
    /// installed. Panics if they are installed but do not start.
    pub fn start() -> Option<Browser> {
        Browser::start_with(&[])
    }

    /// `start` with more Chromium flags (e.g. the test certificate's key to trust).
    pub fn start_with(extra_args: &[String]) -> Option<Browser> {
        let chromium = CHROMIUM.iter().find(|p| Path::new(p).exists());
        let (Some(chromium), true) = (chromium, Path::new(CHROMEDRIVER).exists()) else {
            eprintln!(
                "\n\n!!!!!!!! SKIPPED: a real-browser test needs Debian's chromium and chromium-driver \
                 ({} and {CHROMEDRIVER}); install them with `apt-get install -y chromium chromium-driver` \
                 (.ci/run does) !!!!!!!!\n",
                CHROMIUM.join(" or ")
            );
            return None;
        };
        let dir = scratch_dir("browser");
        let profile = dir.join("profile");
        std::fs::create_dir_all(&profile).expect("create the browser profile");
        let mut driver = None;
        let mut port = 0;
        for _ in 0..5 {
            port = free_port();
            let args = vec![format!("--port={port}")];
            if let Some(p) = spawn_listening("chromedriver", CHROMEDRIVER, &args, &[], &dir, port) {
                driver = Some(p);
                break;
            }
        }
        let driver = driver.expect("chromedriver did not start in 5 tries");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime for the browser");
        let mut args: Vec<String> = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--window-size=1400,2400",
        ]
        .iter()
        .map(|a| a.to_string())
        .collect();
        args.push(format!("--user-data-dir={}", profile.display()));
        args.extend(extra_args.iter().cloned());
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": args,
            },
            "goog:loggingPrefs": {"browser": "ALL"},
        });
        let caps = match caps {
            Value::Object(m) => m,
            _ => unreachable!(),
        };
        let client = rt
            .block_on(
                ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                    .capabilities(caps)
                    .connect(&format!("http://127.0.0.1:{port}")),
            )
            .unwrap_or_else(|e| panic!("no Chromium session: {e}\n{}", driver.logs()));
        Some(Browser {
            rt,
            client: Some(client),
            _driver: driver,
            profile,
        })
    }

    fn c(&self) -> &Client {
        self.client.as_ref().expect("the session is open")
    }

    pub fn goto(&self, url: &str) {
        self.rt
            .block_on(self.c().goto(url))
            .unwrap_or_else(|e| panic!("cannot open {url}: {e}"));
    }

    pub fn current_url(&self) -> String {
        self.rt
            .block_on(self.c().current_url())
            .map(|u| u.to_string())
            .unwrap_or_default()
    }

    /// Runs `script` (a function body: `return ...`) in the page with `args`.
    pub fn js(&self, script: &str, args: Vec<Value>) -> Value {
        self.rt
            .block_on(self.c().execute(script, args))
            .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// Runs `script` until it returns something truthy (not null, false, 0 or ""), at most
    /// `limit`; returns that value.
    pub fn wait_for(&self, limit: Duration, script: &str) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            let v = self
                .rt
                .block_on(self.c().execute(script, vec![]))
                .unwrap_or(Value::Null);
            let truthy = match &v {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::Number(n) => n.as_f64() != Some(0.0),
                Value::String(s) => !s.is_empty(),
                _ => true,
            };
            if truthy {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "not reached within {limit:?}: {script}\nconsole: {:?}",
                self.console_log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The element at `css` (a test failure when there is none).
    async fn find(&self, css: &str) -> fantoccini::elements::Element {
        self.c()
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css}: {e}"))
    }

    /// Types `text` into the element at `css`.
    pub fn type_into(&self, css: &str, text: &str) {
        self.rt.block_on(async {
            let e = self.find(css).await;
            e.clear()
                .await
                .unwrap_or_else(|e| panic!("cannot clear {css}: {e}"));
            e.send_keys(text)
                .await
                .unwrap_or_else(|e| panic!("cannot type into {css}: {e}"));
        });
    }

    /// Clicks the element at `css`.
    pub fn click(&self, css: &str) {
        self.rt.block_on(async {
            let e = self.find(css).await;
            e.click()
                .await
                .unwrap_or_else(|e| panic!("cannot click {css}: {e}"));
        });
    }

    /// The text of the element at `css` as the page shows it.
    pub fn text(&self, css: &str) -> String {
        self.js(
            "const e = document.querySelector(arguments[0]); return e ? e.textContent : null",
            vec![json!(css)],
        )
        .as_str()
        .unwrap_or_default()
        .to_string()
    }

    /// The browser console's entries since the last call (chromedriver hands each once).
    pub fn console_log(&self) -> Vec<LogEntry> {
        let v = self
            .rt
            .block_on(self.c().issue_cmd(BrowserLog))
            .unwrap_or(Value::Null);
        v.as_array()
            .into_iter()
            .flatten()
            .map(|e| LogEntry {
                level: e["level"].as_str().unwrap_or("").to_string(),
                message: e["message"].as_str().unwrap_or("").to_string(),
            })
            .collect()
    }

    /// The console's errors (failed loads, uncaught exceptions, `console.error`) since the
    /// last call.
    pub fn console_errors(&self) -> Vec<LogEntry> {
        self.console_log()
            .into_iter()
            .filter(|e| e.level == "SEVERE")
            .collect()
    }

    /// A PNG of the window.
    pub fn screenshot(&self, path: &Path) {
        let png = self
            .rt
            .block_on(self.c().screenshot())
            .unwrap_or_else(|e| panic!("no screenshot: {e}"));
        std::fs::write(path, png)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(c) = self.client.take() {
            let _ = self.rt.block_on(c.close());
        }
    }
}

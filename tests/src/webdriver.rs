//! A real browser for the dashboard tests: Debian's Chromium, headless,
//! driven over the W3C WebDriver protocol through `chromedriver` (both from
//! apt: `scripts/setup.sh`). A thin client over reqwest: open a page, find
//! elements by CSS, type, click, read text and source, run a script,
//! read cookies, take a screenshot.

use crate::process::Process;
use crate::stack::free_port;
use base64::Engine;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The W3C name of an element reference in answers.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
/// The browser binary (`$CHROMIUM_BIN` overrides).
const CHROMIUM: &str = "/usr/bin/chromium";
/// The driver binary (`$CHROMEDRIVER_BIN` overrides).
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

fn binary(variable: &str, default: &str) -> PathBuf {
    let path = std::env::var(variable).map_or_else(|_| PathBuf::from(default), PathBuf::from);
    assert!(
        path.exists(),
        "{} is missing: install Debian's chromium and chromium-driver (scripts/setup.sh)",
        path.display()
    );
    path
}

/// A headless Chromium session; the driver (and the browser) stop on drop.
pub struct Browser {
    client: reqwest::Client,
    base: String,
    _driver: Process,
}

/// An element of the current page.
#[derive(Debug, Clone)]
pub struct Element(String);

impl Browser {
    /// Starts chromedriver and a headless Chromium session; logs in `dir`.
    pub async fn start(dir: &Path) -> Browser {
        let port = free_port();
        let driver = Process::spawn(
            "chromedriver",
            &binary("CHROMEDRIVER_BIN", CHROMEDRIVER),
            &[format!("--port={port}")],
            dir.join("chromedriver.log"),
        );
        let client = reqwest::Client::new();
        let root = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = client.get(format!("{root}/status")).send().await;
            if let Ok(r) = ready {
                let status: Value = r.json().await.unwrap_or_default();
                if status["value"]["ready"] == true {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let chromium = binary("CHROMIUM_BIN", CHROMIUM);
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium.to_string_lossy(),
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1360,900",
                         format!("--user-data-dir={}", dir.join("chromium").display())]
            }
        }}});
        let answer: Value = client
            .post(format!("{root}/session"))
            .json(&capabilities)
            .send()
            .await
            .unwrap_or_else(|e| panic!("cannot reach chromedriver: {e}"))
            .json()
            .await
            .unwrap_or_else(|e| panic!("bad session answer: {e}"));
        let id = answer["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no browser session: {answer}"));
        Browser {
            base: format!("{root}/session/{id}"),
            client,
            _driver: driver,
        }
    }

    async fn command(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let answer: Value = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("webdriver {path}: {e}"))
            .json()
            .await
            .unwrap_or_else(|e| panic!("webdriver {path}: {e}"));
        if answer["value"]["error"].is_string() {
            panic!("webdriver {path} failed: {}", answer["value"]);
        }
        answer["value"].clone()
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        self.command(reqwest::Method::POST, path, Some(body)).await
    }

    async fn get(&self, path: &str) -> Value {
        self.command(reqwest::Method::GET, path, None).await
    }

    /// Opens `url` and waits for it to load.
    pub async fn goto(&self, url: &str) {
        self.post("/url", json!({ "url": url })).await;
    }

    /// The current page's URL.
    pub async fn url(&self) -> String {
        self.get("/url")
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The current page's HTML as the browser holds it.
    pub async fn source(&self) -> String {
        self.get("/source")
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The first element matching `css` (panics if none).
    pub async fn find(&self, css: &str) -> Element {
        let found = self
            .post("/element", json!({"using": "css selector", "value": css}))
            .await;
        let id = found[ELEMENT].as_str();
        Element(
            id.unwrap_or_else(|| panic!("no element {css}: {found}"))
                .to_string(),
        )
    }

    /// Every element matching `css`.
    pub async fn find_all(&self, css: &str) -> Vec<Element> {
        let found = self
            .post("/elements", json!({"using": "css selector", "value": css}))
            .await;
        found
            .as_array()
            .map(|all| {
                all.iter()
                    .filter_map(|e| e[ELEMENT].as_str())
                    .map(|e| Element(e.to_string()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Types `text` into the element matching `css`.
    pub async fn fill(&self, css: &str, text: &str) {
        let element = self.find(css).await;
        self.post(&format!("/element/{}/clear", element.0), json!({}))
            .await;
        self.post(
            &format!("/element/{}/value", element.0),
            json!({ "text": text }),
        )
        .await;
    }

    /// Clicks the element matching `css` (a submit waits for the next page).
    pub async fn click(&self, css: &str) {
        let element = self.find(css).await;
        self.click_on(&element).await;
    }

    /// Clicks the element matching `css` and waits for the next page to
    /// load (a click returns before a form's answer arrives).
    pub async fn click_and_wait(&self, css: &str) {
        self.execute("window.keygateOldPage = true").await;
        self.click(css).await;
        let deadline = Instant::now() + Duration::from_secs(15);
        let loaded = "return !window.keygateOldPage && document.readyState === 'complete'";
        while self.execute(loaded).await != true {
            assert!(
                Instant::now() < deadline,
                "no new page after clicking {css}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn click_on(&self, element: &Element) {
        self.post(&format!("/element/{}/click", element.0), json!({}))
            .await;
    }

    /// The visible text of the element matching `css`.
    pub async fn text(&self, css: &str) -> String {
        let element = self.find(css).await;
        self.text_of(&element).await
    }

    pub async fn text_of(&self, element: &Element) -> String {
        let text = self.get(&format!("/element/{}/text", element.0)).await;
        text.as_str().unwrap_or_default().to_string()
    }

    /// An attribute of `element`.
    pub async fn attribute(&self, element: &Element, name: &str) -> Option<String> {
        let value = self
            .get(&format!("/element/{}/attribute/{name}", element.0))
            .await;
        value.as_str().map(str::to_string)
    }

    /// Runs `script` in the page (WebDriver's own, not subject to the CSP).
    pub async fn execute(&self, script: &str) -> Value {
        self.post("/execute/sync", json!({"script": script, "args": []}))
            .await
    }

    /// The value of cookie `name` (HttpOnly ones too), if set.
    pub async fn cookie(&self, name: &str) -> Option<String> {
        let all = self.get("/cookie").await;
        all.as_array()?
            .iter()
            .find(|c| c["name"] == name)
            .and_then(|c| c["value"].as_str())
            .map(str::to_string)
    }

    /// Every cookie, as the browser holds them (flags included).
    pub async fn cookies(&self) -> Value {
        self.get("/cookie").await
    }

    /// Saves a PNG of the window to `path`.
    pub async fn screenshot(&self, path: &Path) {
        let data = self.get("/screenshot").await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(data.as_str().unwrap_or_default())
            .unwrap_or_else(|e| panic!("bad screenshot: {e}"));
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        }
        std::fs::write(path, png).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
}

impl Drop for Browser {
    /// Ends the session (which closes Chromium) before the driver is killed:
    /// a plain blocking DELETE, as drop cannot wait on the async client.
    fn drop(&mut self) {
        use std::io::{Read, Write};
        let Some((host, path)) = self
            .base
            .strip_prefix("http://")
            .and_then(|rest| rest.split_once('/'))
        else {
            return;
        };
        if let Ok(mut stream) = std::net::TcpStream::connect(host) {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let request = format!(
                "DELETE /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
            );
            let _ = stream.write_all(request.as_bytes());
            let _ = stream.read_to_end(&mut Vec::new());
        }
    }
}

//! Headless Chromium over the Chrome DevTools Protocol: start the browser, open one page, load a
//! file, read values from it, take screenshots.
//!
//! Why our own client: it needs seven commands (`Target.createTarget`, `Target.attachToTarget`,
//! `Page.enable`, `Emulation.setDeviceMetricsOverride`, `Page.navigate`, `Runtime.evaluate`,
//! `Page.captureScreenshot`) and one event (`Page.loadEventFired`). `headless_chrome` downloads the
//! protocol definition from GitHub in its build script, which fails on machines without general
//! internet access (this one, CI sandboxes); `chromiumoxide` ships the whole generated protocol,
//! minutes of compile time for those seven commands. A blocking WebSocket (`tungstenite`, already
//! in the workspace) and `serde_json` do it in one small file.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};

use crate::error::{PagesError, Result};

type Socket = tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<std::net::TcpStream>>;

/// Finds a Chromium binary: `$PROXIMA_CHROMIUM`, then `chromium`, `chromium-browser`,
/// `google-chrome` on `PATH`.
pub fn find_chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("PROXIMA_CHROMIUM").map(PathBuf::from) {
        return p.is_file().then_some(p);
    }
    let path = std::env::var_os("PATH")?;
    ["chromium", "chromium-browser", "google-chrome"].iter().find_map(|name| std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file()))
}

/// A running headless Chromium with one attached page; killed when dropped.
pub struct Browser {
    child: Child,
    ws: Socket,
    next: u64,
    session: String,
    _profile: tempfile_dir::TempDir,
}

/// A throwaway profile folder (Chromium refuses to share one between processes).
mod tempfile_dir {
    use std::path::{Path, PathBuf};

    pub struct TempDir(PathBuf);

    impl TempDir {
        pub fn new(prefix: &str) -> std::io::Result<Self> {
            let base = std::env::temp_dir();
            for i in 0..1000u32 {
                let p = base.join(format!("{prefix}-{}-{i}", std::process::id()));
                if std::fs::create_dir(&p).is_ok() {
                    return Ok(TempDir(p));
                }
            }
            Err(std::io::Error::other("cannot create a temporary profile folder"))
        }
        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn err(step: &str, message: impl Into<String>) -> PagesError {
    PagesError::Browser { step: step.to_string(), message: message.into() }
}

impl Browser {
    /// Starts `binary` headless and attaches to a new blank page.
    pub fn launch(binary: &Path) -> Result<Browser> {
        let profile = tempfile_dir::TempDir::new("proxima-chromium").map_err(|e| err("creating a browser profile", e.to_string()))?;
        let mut child = Command::new(binary)
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--hide-scrollbars",
                "--mute-audio",
                "--allow-file-access-from-files",
                "--font-render-hinting=none",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| err("starting Chromium", format!("{}: {e}", binary.display())))?;
        let stderr = child.stderr.take().expect("piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for l in std::io::BufReader::new(stderr).lines().map_while(std::result::Result::ok) {
                if let Some(u) = l.strip_prefix("DevTools listening on ") {
                    let _ = tx.send(u.trim().to_string());
                }
            }
        });
        let url = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(u) => u,
            Err(_) => {
                let _ = child.kill();
                let status = child.wait().map(|s| s.to_string()).unwrap_or_default();
                return Err(err("starting Chromium", format!("{} printed no DevTools address within 60 s ({status})", binary.display())));
            }
        };
        let (mut ws, _) = tungstenite::connect(&url).map_err(|e| err("connecting to Chromium's DevTools", e.to_string()))?;
        if let tungstenite::stream::MaybeTlsStream::Plain(s) = ws.get_mut() {
            let _ = s.set_read_timeout(Some(Duration::from_secs(60)));
        }
        let mut b = Browser { child, ws, next: 0, session: String::new(), _profile: profile };
        let target = b.call_browser("Target.createTarget", json!({ "url": "about:blank" }))?["targetId"].clone();
        let session = b.call_browser("Target.attachToTarget", json!({ "targetId": target, "flatten": true }))?["sessionId"]
            .as_str()
            .ok_or_else(|| err("attaching to a page", "no session id"))?
            .to_string();
        b.session = session;
        b.call("Page.enable", json!({}))?;
        Ok(b)
    }

    fn send(&mut self, method: &str, params: Value, session: bool) -> Result<u64> {
        self.next += 1;
        let id = self.next;
        let mut msg = json!({ "id": id, "method": method, "params": params });
        if session {
            msg["sessionId"] = Value::String(self.session.clone());
        }
        self.ws.send(tungstenite::Message::text(msg.to_string())).map_err(|e| err(method, format!("Chromium stopped answering: {e}")))?;
        Ok(id)
    }

    /// Reads messages until `until` returns a value (events and other answers are skipped).
    fn read_until<T>(&mut self, step: &str, deadline: Instant, mut until: impl FnMut(&Value) -> Option<Result<T>>) -> Result<T> {
        loop {
            if Instant::now() > deadline {
                return Err(err(step, "timed out"));
            }
            let m = self.ws.read().map_err(|e| err(step, format!("Chromium stopped answering (crashed or killed?): {e}")))?;
            let Ok(text) = m.to_text() else { continue };
            let v: Value = serde_json::from_str(text).unwrap_or(Value::Null);
            if let Some(r) = until(&v) {
                return r;
            }
        }
    }

    fn answer(&mut self, method: &str, id: u64) -> Result<Value> {
        let step = method.to_string();
        self.read_until(method, Instant::now() + Duration::from_secs(60), |v| {
            (v["id"].as_u64() == Some(id)).then(|| match v.get("error") {
                Some(e) => Err(err(&step, e.to_string())),
                None => Ok(v["result"].clone()),
            })
        })
    }

    fn call_browser(&mut self, method: &str, params: Value) -> Result<Value> {
        let id = self.send(method, params, false)?;
        self.answer(method, id)
    }

    /// Sends a command to the page and waits for its answer.
    pub fn call(&mut self, method: &str, params: Value) -> Result<Value> {
        let id = self.send(method, params, true)?;
        self.answer(method, id)
    }

    /// Sets the viewport (CSS pixels at device scale 1).
    pub fn set_viewport(&mut self, width: u32, height: u32, mobile: bool) -> Result<()> {
        self.call("Emulation.setDeviceMetricsOverride", json!({ "width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile }))?;
        Ok(())
    }

    /// Loads `file` and waits for its load event (images, styles and fonts requested by then).
    pub fn load_file(&mut self, file: &Path) -> Result<()> {
        let abs = std::fs::canonicalize(file).map_err(|e| err("loading a page", format!("{}: {e}", file.display())))?;
        let url = format!("file://{}", abs.display());
        let id = self.send("Page.navigate", json!({ "url": url }), true)?;
        let mut answered = false;
        let mut loaded = false;
        let step = format!("loading {}", file.display());
        let s2 = step.clone();
        self.read_until(&step, Instant::now() + Duration::from_secs(60), |v| {
            if v["id"].as_u64() == Some(id) {
                if let Some(e) = v.get("error").or_else(|| v["result"].get("errorText")) {
                    return Some(Err(err(&s2, e.to_string())));
                }
                answered = true;
            }
            if v["method"] == "Page.loadEventFired" {
                loaded = true;
            }
            (answered && loaded).then_some(Ok(()))
        })
    }

    /// Evaluates JavaScript in the page (promises awaited) and returns its JSON value.
    pub fn eval(&mut self, js: &str) -> Result<Value> {
        let r = self.call("Runtime.evaluate", json!({ "expression": js, "returnByValue": true, "awaitPromise": true }))?;
        if let Some(e) = r.get("exceptionDetails") {
            return Err(err("running the page's script", e["exception"]["description"].as_str().unwrap_or(&e.to_string()).to_string()));
        }
        Ok(r["result"]["value"].clone())
    }

    /// A PNG screenshot of the viewport.
    pub fn screenshot_png(&mut self) -> Result<Vec<u8>> {
        let r = self.call("Page.captureScreenshot", json!({ "format": "png", "captureBeyondViewport": false }))?;
        let b64 = r["data"].as_str().ok_or_else(|| err("taking a screenshot", "no data"))?;
        base64::engine::general_purpose::STANDARD.decode(b64).map_err(|e| err("taking a screenshot", e.to_string()))
    }
}

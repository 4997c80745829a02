//! Pages in headless Chromium, for the tests that render HTML (run
//! reports, the mesh heat map): where their artifacts go, screenshots, and
//! the DOM Chromium built, read back as each element's attributes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::lab::text;

/// Where a scenario's page, screenshot and captures go:
/// `target/artifacts/html/SCENARIO/`, emptied first.
pub fn artifacts(scenario: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/
    let target = exe
        .ancestors()
        .nth(3)
        .expect("test binary lives in target/<profile>/deps");
    let dir = target.join("artifacts/html").join(scenario);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("artifacts dir");
    dir
}

/// Headless Chromium on `page` (`scripts/deps.sh` installs it; no sandbox,
/// as the tests run as root).
fn chromium(args: &[&str], page: &str) -> Output {
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
        ])
        .args(args)
        .arg(page)
        .output()
        .expect("chromium is missing: run scripts/deps.sh (it installs chromium)");
    assert!(out.status.success(), "chromium {args:?}: {}", text(&out));
    out
}

fn url(page: &Path, fragment: &str) -> String {
    format!("file://{}{fragment}", page.display())
}

/// A screenshot of `page` opened at `fragment` (`#ladder-only`: the
/// diagram alone), as `png`; asserts a PNG came out.
pub fn screenshot(page: &Path, fragment: &str, png: &Path, height: u32) {
    chromium(
        &[
            &format!("--screenshot={}", png.display()),
            &format!("--window-size=2000,{height}"),
        ],
        &url(page, fragment),
    );
    let bytes = std::fs::read(png).expect("the screenshot");
    assert!(
        bytes.starts_with(b"\x89PNG") && bytes.len() > 20_000,
        "{} is not a rendered page ({} bytes)",
        png.display(),
        bytes.len()
    );
}

/// Every element's attributes, in document order, from the DOM Chromium
/// built (`--dump-dom`); asserts the DOM contains `marker` (a sign the
/// page rendered, not an error page).
pub fn dom(page: &Path, marker: &str) -> Vec<BTreeMap<String, String>> {
    let out = chromium(&["--dump-dom"], &url(page, ""));
    let html = String::from_utf8_lossy(&out.stdout);
    assert!(html.contains(marker), "no {marker:?} in {html}");
    tags(&html)
}

/// The attributes of each start tag (quoted values, entities decoded).
fn tags(html: &str) -> Vec<BTreeMap<String, String>> {
    let mut out = Vec::new();
    for chunk in html.split('<').skip(1) {
        if chunk.starts_with('/') || chunk.starts_with('!') {
            continue;
        }
        let mut attrs = BTreeMap::new();
        let mut rest = chunk;
        let name_end = rest.find(|c: char| c.is_whitespace() || c == '>' || c == '/');
        attrs.insert("<tag>".to_owned(), rest[..name_end.unwrap_or(0)].to_owned());
        while let Some(eq) = rest.find("=\"") {
            if rest[..eq].contains('>') {
                break;
            }
            let name = rest[..eq].rsplit(char::is_whitespace).next().unwrap_or("");
            let value_end = rest[eq + 2..].find('"').expect("closed attribute");
            let value = &rest[eq + 2..eq + 2 + value_end];
            attrs.insert(name.to_owned(), unescape(value));
            rest = &rest[eq + 2 + value_end + 1..];
        }
        out.push(attrs);
    }
    out
}

fn unescape(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&#39;", "'")
        .replace("&nbsp;", "\u{a0}")
        .replace("&amp;", "&")
}

/// The elements that carry attribute `attr`.
pub fn with<'a>(
    elements: &'a [BTreeMap<String, String>],
    attr: &'a str,
) -> impl Iterator<Item = &'a BTreeMap<String, String>> + 'a {
    elements.iter().filter(move |e| e.contains_key(attr))
}

/// A headless browser on a live site (the coordinator's web view): one
/// profile for its life, so a cookie a page sets is sent with the next; no
/// proxy (the site is on the lab's own addresses); the site's certificate
/// accepted unchecked (it is the mesh's own CA, which Chromium does not
/// know; curl checks it properly in the tests).
#[derive(Debug)]
pub struct Browser {
    profile: tempfile::TempDir,
}

impl Browser {
    /// A browser with a fresh profile.
    pub fn new() -> Self {
        Self {
            profile: tempfile::tempdir().expect("a browser profile dir"),
        }
    }

    fn args<'a>(&'a self, more: &[&'a str]) -> Vec<String> {
        let mut args = vec![
            format!("--user-data-dir={}", self.profile.path().display()),
            "--no-proxy-server".to_owned(),
            "--ignore-certificate-errors".to_owned(),
        ];
        args.extend(more.iter().map(|a| (*a).to_owned()));
        args
    }

    /// The DOM Chromium built for `url` (after redirects), as text and as
    /// each element's attributes; asserts it contains `marker`.
    pub fn dom(&self, url: &str, marker: &str) -> (String, Vec<BTreeMap<String, String>>) {
        let args = self.args(&["--dump-dom"]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = chromium(&args, url);
        let html = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(html.contains(marker), "no {marker:?} at {url}: {html}");
        let elements = tags(&html);
        (html, elements)
    }

    /// A screenshot of `url` as `png`; asserts a PNG came out.
    pub fn screenshot(&self, url: &str, png: &Path, height: u32) {
        let shot = format!("--screenshot={}", png.display());
        let size = format!("--window-size=1600,{height}");
        let args = self.args(&[&shot, &size]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        chromium(&args, url);
        let bytes = std::fs::read(png).expect("the screenshot");
        assert!(
            bytes.starts_with(b"\x89PNG") && bytes.len() > 10_000,
            "{} is not a rendered page ({} bytes)",
            png.display(),
            bytes.len()
        );
    }
}

impl Default for Browser {
    fn default() -> Self {
        Self::new()
    }
}

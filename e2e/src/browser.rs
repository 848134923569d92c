//! The headless browser the browser tests drive (`e2e/tests/browser.rs`,
//! `market/tests/console.rs`): where Chromium is, and why the browser cannot run here, if
//! it cannot. Only `std`: the market's tests include this file (`#[path]`), as the market
//! crate cannot depend on this one.

use std::path::{Path, PathBuf};

/// Chromium: `SUBLET_CHROMIUM` if set (and a file), else the first of the usual places.
pub fn chromium() -> Option<PathBuf> {
    if let Ok(path) = std::env::var("SUBLET_CHROMIUM") {
        return Some(PathBuf::from(path)).filter(|p| p.is_file());
    }
    [
        "/usr/bin/chromium",
        "/usr/bin/chromium-browser",
        "/usr/bin/google-chrome",
    ]
    .into_iter()
    .map(PathBuf::from)
    .find(|p| p.is_file())
}

/// Why the browser cannot run with the driver scripts in `driver_dir` (`e2e/console`),
/// if it cannot: node, Chromium or the driver's playwright-core missing.
pub fn missing(driver_dir: &Path) -> Option<String> {
    let node = std::process::Command::new("node").arg("--version").output();
    if !node.is_ok_and(|o| o.status.success()) {
        return Some("node is not installed".into());
    }
    if chromium().is_none() {
        return Some(
            "Chromium is not installed (apt-get install chromium, or set SUBLET_CHROMIUM)".into(),
        );
    }
    let playwright = driver_dir.join("node_modules/playwright-core/package.json");
    if !playwright.is_file() {
        return Some(format!(
            "playwright-core is not installed in {} (npm ci there)",
            driver_dir.display()
        ));
    }
    None
}

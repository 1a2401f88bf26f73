//! The operators' dashboard: one page and its script and style, compiled into the binary
//! (`aggregator/dashboard/`), nothing fetched from elsewhere. The page is public; everything
//! it shows comes from the API with the session cookie set at login, so it shows each user
//! what the API lets that user see.

use axum::http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE};
use axum::response::{IntoResponse, Redirect};
use axum::routing::get;
use axum::Router;

use crate::api::ApiState;

const INDEX: &str = include_str!("../dashboard/index.html");
const APP_JS: &str = include_str!("../dashboard/app.js");
const APP_CSS: &str = include_str!("../dashboard/app.css");

/// Only this origin's scripts, styles, images and connections.
const CSP: &str = "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'";

/// Whether `path` is one of the dashboard's public files.
pub fn is_asset(path: &str) -> bool {
    path == "/" || path == "/dashboard" || path.starts_with("/dashboard/")
}

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (CONTENT_TYPE, content_type),
            (CACHE_CONTROL, "no-cache"),
            (CONTENT_SECURITY_POLICY, CSP),
        ],
        body,
    )
}

pub fn router() -> Router<ApiState> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/dashboard/") }))
        .route("/dashboard", get(|| async { Redirect::to("/dashboard/") }))
        .route(
            "/dashboard/",
            get(|| async { asset("text/html; charset=utf-8", INDEX) }),
        )
        .route(
            "/dashboard/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/dashboard/app.css",
            get(|| async { asset("text/css; charset=utf-8", APP_CSS) }),
        )
}

#[cfg(test)]
mod tests {
    /// Every file the page loads is served by this router; nothing comes from elsewhere.
    #[test]
    fn the_page_loads_only_local_files() {
        for src in [super::INDEX, super::APP_JS, super::APP_CSS] {
            // The SVG namespace is a name, not a fetch.
            let src = src.replace("\"http://www.w3.org/2000/svg\"", "");
            for remote in ["http://", "https://", "//cdn", "@import"] {
                assert!(!src.contains(remote), "{remote} in a dashboard file");
            }
        }
        assert!(super::INDEX.contains("src=\"/dashboard/app.js\""));
        assert!(super::INDEX.contains("href=\"/dashboard/app.css\""));
    }
}

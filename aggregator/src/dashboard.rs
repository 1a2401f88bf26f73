//! The operators' dashboard: one page and its script and style, compiled into the binary
//! (`aggregator/dashboard/`), nothing fetched from elsewhere. The page is public; everything
//! it shows comes from the API with the session cookie set at login, so it shows each user
//! what the API lets that user see. `settings.json` tells the page, before anyone logs in,
//! the language it opens in and the time zone every time is shown in (`[display]`).

use axum::extract::State;
use axum::http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE};
use axum::response::{IntoResponse, Redirect};
use axum::routing::get;
use axum::Router;

use crate::api::ApiState;

const INDEX: &str = include_str!("../dashboard/index.html");
const APP_JS: &str = include_str!("../dashboard/app.js");
const I18N_JS: &str = include_str!("../dashboard/i18n.js");
const APP_CSS: &str = include_str!("../dashboard/app.css");

/// Only this origin's scripts, styles, images and connections; images also from the map
/// tiles' origin when `[display] map_tiles` names one.
fn csp(display: &crate::config::DisplayConfig) -> String {
    let tiles = display
        .tile_origin()
        .map(|o| format!(" {o}"))
        .unwrap_or_default();
    format!("default-src 'self'; img-src 'self' data: blob:{tiles}; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'")
}

/// Whether `path` is one of the dashboard's public files.
pub fn is_asset(path: &str) -> bool {
    path == "/" || path == "/dashboard" || path.starts_with("/dashboard/")
}

fn asset(s: &ApiState, content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (CONTENT_TYPE, content_type.to_string()),
            (CACHE_CONTROL, "no-cache".to_string()),
            (CONTENT_SECURITY_POLICY, csp(&s.display)),
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
            get(|State(s): State<ApiState>| async move { asset(&s, "text/html; charset=utf-8", INDEX) }),
        )
        .route(
            "/dashboard/app.js",
            get(|State(s): State<ApiState>| async move { asset(&s, "text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/dashboard/i18n.js",
            get(|State(s): State<ApiState>| async move { asset(&s, "text/javascript; charset=utf-8", I18N_JS) }),
        )
        .route(
            "/dashboard/settings.json",
            get(|State(s): State<ApiState>| async move {
                (
                    [
                        (CONTENT_TYPE, "application/json"),
                        (CACHE_CONTROL, "no-cache"),
                    ],
                    serde_json::to_string(&*s.display).expect("plain strings"),
                )
            }),
        )
        .route(
            "/dashboard/app.css",
            get(|State(s): State<ApiState>| async move { asset(&s, "text/css; charset=utf-8", APP_CSS) }),
        )
}

#[cfg(test)]
mod tests {
    /// Every file the page loads is served by this router; nothing comes from elsewhere.
    #[test]
    fn the_page_loads_only_local_files() {
        for src in [super::INDEX, super::APP_JS, super::I18N_JS, super::APP_CSS] {
            // The SVG namespace is a name, not a fetch.
            let src = src.replace("\"http://www.w3.org/2000/svg\"", "");
            for remote in ["http://", "https://", "//cdn", "@import"] {
                assert!(!src.contains(remote), "{remote} in a dashboard file");
            }
        }
        assert!(super::INDEX.contains("src=\"/dashboard/app.js\""));
        assert!(super::INDEX.contains("src=\"/dashboard/i18n.js\""));
        assert!(super::INDEX.contains("href=\"/dashboard/app.css\""));
    }

    /// Images from the page's own origin only, unless tiles are configured: then from
    /// their origin too, and nothing else.
    #[test]
    fn the_policy_names_the_tile_server_only_when_configured() {
        let none = super::csp(&crate::config::DisplayConfig::default());
        assert!(none.contains("img-src 'self' data: blob:;"), "{none}");
        let tiles = super::csp(&crate::config::DisplayConfig {
            map_tiles: Some("https://gis.police.local/t/{z}/{x}/{y}.png".into()),
            ..Default::default()
        });
        assert!(
            tiles.contains("img-src 'self' data: blob: https://gis.police.local;"),
            "{tiles}"
        );
        assert!(tiles.contains("connect-src 'self';"), "{tiles}");
    }

    /// The catalogue's keys of one language: the lines `"key": "text",` of its block.
    fn catalogue(lang: &str) -> std::collections::BTreeMap<String, String> {
        let start = super::I18N_JS
            .find(&format!("\n  {lang}: {{"))
            .unwrap_or_else(|| panic!("{lang} block in i18n.js"));
        let block = &super::I18N_JS[start..];
        let block = &block[..block.find("\n  },").expect("the block ends")];
        block
            .lines()
            .filter_map(|l| {
                let l = l.trim();
                let rest = l.strip_prefix('"')?;
                let (k, v) = rest.split_once("\": \"")?;
                Some((
                    k.to_string(),
                    v.trim_end_matches(',').trim_end_matches('"').to_string(),
                ))
            })
            .collect()
    }

    /// Values of `attr="..."` in `src`.
    fn attr_values<'a>(src: &'a str, attr: &str) -> Vec<&'a str> {
        src.split(&format!("{attr}=\""))
            .skip(1)
            .map(|r| &r[..r.find('"').unwrap()])
            .collect()
    }

    /// Both languages hold every message the page and the script name, and every name of a
    /// value the API sends (event kinds, anomalies, review states, roles, plate colours,
    /// watch-list states): nothing falls back to a code word or the other language.
    #[test]
    fn the_catalogue_covers_the_page_and_every_value() {
        let zh = catalogue("\"zh-CN\"");
        let en = catalogue("en");
        assert!(zh.len() > 100, "{} zh-CN messages", zh.len());
        let only_zh: Vec<_> = zh.keys().filter(|k| !en.contains_key(*k)).collect();
        let only_en: Vec<_> = en.keys().filter(|k| !zh.contains_key(*k)).collect();
        assert!(
            only_zh.is_empty() && only_en.is_empty(),
            "zh-CN only: {only_zh:?}; en only: {only_en:?}"
        );
        let mut used: Vec<String> = Vec::new();
        for attr in [
            "data-i18n",
            "data-i18n-placeholder",
            "data-i18n-title",
            "data-i18n-aria",
        ] {
            used.extend(
                attr_values(super::INDEX, attr)
                    .into_iter()
                    .map(String::from),
            );
            used.extend(
                attr_values(super::APP_JS, &format!("\"{attr}\": "))
                    .into_iter()
                    .map(String::from),
            );
        }
        // Calls of t("key", ...): `t(` not ending a longer name (split(, set(, ...).
        let js = super::APP_JS;
        for (at, _) in js.match_indices("t(\"") {
            let before = js[..at].chars().next_back();
            if before.is_some_and(|c| c.is_ascii_alphanumeric() || "_$.".contains(c)) {
                continue;
            }
            let rest = &js[at + 3..];
            used.push(rest[..rest.find('"').unwrap()].to_string());
        }
        let as_name = |v: serde_json::Value| v.as_str().unwrap().to_string();
        let mut values: Vec<(&str, String)> = Vec::new();
        for k in protocol::EventKind::ALL {
            values.push(("kind", k.as_str().into()));
        }
        use protocol::AnomalyType as A;
        for a in [
            A::FormatInvalid,
            A::NotRegistered,
            A::WatchList,
            A::ClassMismatch,
            A::ClonedPlate,
            A::NightCoach,
            A::RestrictedZone,
            A::SectionSpeeding,
        ] {
            values.push(("anomaly", a.as_str().into()));
        }
        for a in protocol::VehicleAlertKind::ALL {
            values.push(("valert", a.as_str().into()));
        }
        use crate::vehicle_state::State as V;
        for st in [V::Driving, V::Stopped, V::StoppedAbnormally] {
            values.push(("vstate", as_name(serde_json::to_value(st).unwrap())));
        }
        for sev in crate::accidents::SEVERITIES {
            values.push(("severity", sev.into()));
        }
        for d in 1..=7 {
            values.push(("weekday", d.to_string()));
        }
        use protocol::ReviewState as R;
        for r in [R::NotRequired, R::Pending, R::Confirmed, R::Rejected] {
            values.push(("review", as_name(serde_json::to_value(r).unwrap())));
        }
        use crate::auth::Role;
        for r in [
            Role::CountyOperator,
            Role::CityOperator,
            Role::Reviewer,
            Role::Admin,
        ] {
            values.push(("role", as_name(serde_json::to_value(r).unwrap())));
        }
        for k in ["crosswalk", "waiting_area", "lane", "restricted"] {
            values.push(("zonekind", k.into()));
        }
        use protocol::plate::PlateColor as C;
        for c in [
            C::Blue,
            C::Yellow,
            C::Green,
            C::YellowGreen,
            C::White,
            C::Black,
        ] {
            values.push(("colour", as_name(serde_json::to_value(c).unwrap())));
        }
        use protocol::registry::Status as S;
        for st in [
            S::Scrapped,
            S::Wanted,
            S::LicenceRevoked,
            S::InspectionOverdue,
            S::HitAndRun,
        ] {
            values.push(("status", st.as_str().into()));
        }
        for state in ["connecting", "live", "reconnecting"] {
            values.push(("live", state.into()));
        }
        for action in [
            "review",
            "login",
            "login_failed",
            "unlock",
            "plate_query",
            "watchlist_put",
        ] {
            values.push(("action", action.into()));
        }
        for role in [
            "stage1", "stage2", "stage3", "closeup", "vehicle", "plate", "scene",
        ] {
            values.push(("picture", role.into()));
        }
        for reason in ["behind", "budget", "inference_error", "stopped"] {
            values.push(("drop", reason.into()));
        }
        used.extend(values.iter().map(|(g, v)| format!("{g}.{v}")));
        let missing: Vec<_> = used.iter().filter(|k| !zh.contains_key(*k)).collect();
        assert!(missing.is_empty(), "not in the catalogue: {missing:?}");
        // No English word in a Chinese message (placeholders aside).
        for (k, v) in &zh {
            if k == "lang.switch" {
                continue; // the other language's own name
            }
            let mut text = v.clone();
            while let (Some(a), Some(b)) = (text.find('{'), text.find('}')) {
                if b < a {
                    break;
                }
                text.replace_range(a..=b, "");
            }
            let word = text
                .split(|c: char| !c.is_ascii_alphabetic())
                .find(|w| w.len() >= 2 && *w != "SHA");
            assert!(
                word.is_none(),
                "English '{}' in the zh-CN message {k}: {v}",
                word.unwrap()
            );
        }
    }
}

//! The dashboard's HTML, rendered with `maud` (every value is escaped):
//! the layout, the sign-in and sign-up forms, the keys list, the create,
//! key, revoke and rotate pages, and error pages. Pages hold no script or
//! style of their own (the CSP allows only `/dashboard/assets`).

use super::chart::{self, Point};
use crate::views::KeyView;
use crate::webhooks::{CreatedWebhook, WebhookView};
use maud::{html, Markup, DOCTYPE};

/// The signed-in frame of a page: the tenant and the CSRF token of its forms.
pub struct Nav<'a> {
    pub tenant: &'a str,
    pub email: &'a str,
    pub csrf: &'a str,
}

/// The values of the create form, as typed (kept when it is shown again).
#[derive(Debug, Default, Clone)]
pub struct KeyForm {
    pub name: String,
    pub environment: String,
    pub scopes: Vec<String>,
    pub tier: String,
    pub per_minute: String,
    pub per_day: String,
    pub expires_at: String,
    pub external_id: String,
    /// Allowed requests, and `daily`, `monthly` or blank (ever).
    pub quota: String,
    pub quota_refill: String,
    /// Cost in micro-units, and `month` or blank (ever).
    pub spend_cap: String,
    pub spend_period: String,
}

/// What the create form offers: the deployment's scopes and environments
/// and the plan's tiers.
pub struct Choices<'a> {
    pub scopes: &'a [String],
    pub environments: &'a [&'static str],
    pub tiers: &'a [String],
    pub default_tier: &'a str,
}

fn csrf_field(token: &str) -> Markup {
    html! { input type="hidden" name="csrf" value=(token); }
}

fn error_box(error: Option<&str>) -> Markup {
    html! { @if let Some(e) = error { p.error role="alert" { (e) } } }
}

/// The page frame.
pub fn layout(title: &str, nav: Option<&Nav>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · keygate" }
                link rel="stylesheet" href="/dashboard/assets/app.css";
                link rel="icon" href="/dashboard/assets/favicon.svg" type="image/svg+xml";
                script src="/dashboard/assets/app.js" defer {}
            }
            body {
                header {
                    a.brand href="/dashboard" { "keygate" }
                    @if let Some(nav) = nav {
                        nav {
                            a href="/dashboard/keys" { "Keys" }
                            a href="/dashboard/keys/new" { "Create key" }
                            a href="/dashboard/webhooks" { "Webhooks" }
                        }
                        span.who { (nav.tenant) " · " (nav.email) }
                        form.inline method="post" action="/dashboard/sign-out" {
                            (csrf_field(nav.csrf))
                            button type="submit" id="sign-out" { "Sign out" }
                        }
                    }
                }
                main { h1 { (title) } (body) }
            }
        }
    }
}

/// The sign-in form.
pub fn sign_in(csrf: &str, email: &str, error: Option<&str>) -> Markup {
    layout(
        "Sign in",
        None,
        html! {
            (error_box(error))
            form.card method="post" action="/dashboard/sign-in" {
                (csrf_field(csrf))
                label { "Email" input type="email" name="email" id="email" value=(email) required autocomplete="username"; }
                label { "Password" input type="password" name="password" id="password" required autocomplete="current-password"; }
                button type="submit" id="sign-in" { "Sign in" }
            }
            p { "No account yet? " a href="/dashboard/sign-up" { "Sign up" } }
        },
    )
}

/// The sign-up form.
pub fn sign_up(csrf: &str, name: &str, email: &str, error: Option<&str>) -> Markup {
    layout(
        "Sign up",
        None,
        html! {
            (error_box(error))
            form.card method="post" action="/dashboard/sign-up" {
                (csrf_field(csrf))
                label { "Organization name" input type="text" name="name" id="name" value=(name) required maxlength="100"; }
                label { "Email" input type="email" name="email" id="email" value=(email) required autocomplete="username"; }
                label { "Password (at least 10 characters)" input type="password" name="password" id="password" required minlength="10" autocomplete="new-password"; }
                button type="submit" id="sign-up" { "Create account" }
            }
            p { "Have an account? " a href="/dashboard/sign-in" { "Sign in" } }
        },
    )
}

/// A secret (`what`: "key", "signing secret") shown once, with its copy button.
fn shown_once(what: &str, key: &str) -> Markup {
    html! {
        div.once {
            p.warning { strong { "Copy this " (what) " now: you will not see it again." } }
            div.keybox {
                code id="new-key" { (key) }
                button type="button" class="copy" data-copy="new-key" id="copy" { "Copy" }
            }
        }
    }
}

/// After sign-up: the tenant's admin key, once.
pub fn signed_up(nav: &Nav, key: &str) -> Markup {
    layout(
        "Welcome",
        Some(nav),
        html! {
            p { "Your organization's first key holds every scope (it can manage keys through the API)." }
            (shown_once("key", key))
            p { a.button href="/dashboard/keys" { "Go to your keys" } }
        },
    )
}

/// A key's state as its view shows it at `now` (RFC 3339): `exhausted`
/// while its quota or spending cap is used up (402 at the Envoys).
pub fn status(key: &KeyView, now: &str) -> &'static str {
    let quota_out = key.quota.as_ref().is_some_and(|q| q.exhausted);
    let spend_out = key.spend_cap.as_ref().is_some_and(|c| c.exhausted);
    match (&key.revoked_at, &key.expires_at) {
        (Some(_), _) => "revoked",
        (None, Some(at)) if at.as_str() <= now => "expired",
        _ if quota_out || spend_out => "exhausted",
        _ => "active",
    }
}

fn limits(key: &KeyView) -> Markup {
    let limit = |v: Option<u32>, unit: &str| v.map(|v| format!("{v}/{unit}"));
    let own: Vec<String> = key
        .rate_limits
        .iter()
        .flat_map(|l| [limit(l.per_minute, "min"), limit(l.per_day, "day")])
        .flatten()
        .collect();
    html! {
        (key.rate_limit_tier)
        @if !own.is_empty() { br; small { (own.join(", ")) } }
    }
}

fn or_dash(value: Option<&String>) -> &str {
    value.map_or("—", String::as_str)
}

/// The keys list, each with its sparkline of the last 24 hours.
pub fn keys(nav: &Nav, rows: &[(KeyView, Vec<Point>)], now: &str, next: Option<&str>) -> Markup {
    layout(
        "API keys",
        Some(nav),
        html! {
            p { a.button href="/dashboard/keys/new" id="create-key" { "Create key" } }
            table.keys {
                thead { tr {
                    th { "Name" } th { "Key" } th { "Env" } th { "Scopes" } th { "Tier / limits" }
                    th { "Created" } th { "Expires" } th { "Last used" } th { "Status" } th { "24 h" } th {}
                } }
                tbody {
                    @for (key, points) in rows {
                        @let state = status(key, now);
                        tr data-key-id=(key.id.to_string()) {
                            td.name { a href=(format!("/dashboard/keys/{}", key.id)) { (key.name) } }
                            td { code { (key.api_key_prefix) "…" } }
                            td { (key.environment.as_str()) }
                            td.scopes { (key.scopes.join(" ")) }
                            td { (limits(key)) }
                            td { (key.created_at) }
                            td { (or_dash(key.expires_at.as_ref())) }
                            td { (or_dash(key.last_used_at.as_ref())) }
                            td { span class=(format!("status {state}")) { (state) } }
                            td { (chart::sparkline(points)) }
                            td.actions {
                                @if matches!(state, "active" | "exhausted") {
                                    a href=(format!("/dashboard/keys/{}/rotate", key.id)) { "Rotate" }
                                    " "
                                    a.danger href=(format!("/dashboard/keys/{}/revoke", key.id)) { "Revoke" }
                                }
                            }
                        }
                    }
                }
            }
            @if rows.is_empty() { p { "No keys yet." } }
            @if let Some(cursor) = next {
                p { a href=(format!("/dashboard/keys?cursor={cursor}")) { "Next page →" } }
            }
        },
    )
}

/// The create form.
pub fn new_key(nav: &Nav, choices: &Choices, form: &KeyForm, error: Option<&str>) -> Markup {
    let env = if form.environment.is_empty() {
        "live"
    } else {
        form.environment.as_str()
    };
    let tier = if form.tier.is_empty() {
        choices.default_tier
    } else {
        form.tier.as_str()
    };
    layout(
        "Create an API key",
        Some(nav),
        html! {
            (error_box(error))
            form.card method="post" action="/dashboard/keys/new" {
                (csrf_field(nav.csrf))
                label { "Name" input type="text" name="name" id="key-name" value=(form.name) required maxlength="100"; }
                label { "Environment"
                    select name="environment" id="environment" {
                        @for e in choices.environments {
                            option value=(e) selected[*e == env] { (e) }
                        }
                    }
                }
                fieldset { legend { "Scopes (none checked: the default ones)" }
                    @for s in choices.scopes {
                        label.check {
                            input type="checkbox" name="scopes" value=(s) checked[form.scopes.contains(s)];
                            " " (s)
                        }
                    }
                }
                label { "Rate-limit tier"
                    select name="rate_limit_tier" id="tier" {
                        @for t in choices.tiers { option value=(t) selected[t == tier] { (t) } }
                    }
                }
                div.row {
                    label { "Requests per minute (optional)" input type="number" min="1" name="per_minute" value=(form.per_minute); }
                    label { "Requests per day (optional)" input type="number" min="1" name="per_day" value=(form.per_day); }
                }
                label { "Expires (UTC, optional)" input type="datetime-local" name="expires_at" value=(form.expires_at); }
                label { "External id: the end user or device (optional)" input type="text" name="external_id" maxlength="128" value=(form.external_id); }
                div.row {
                    label { "Request quota (optional)" input type="number" min="1" name="quota" value=(form.quota); }
                    label { "Quota refill"
                        select name="quota_refill" {
                            @for (v, text) in [("", "never"), ("daily", "daily"), ("monthly", "monthly")] {
                                option value=(v) selected[form.quota_refill == v] { (text) }
                            }
                        }
                    }
                }
                div.row {
                    label { "Spending cap, micro-units of cost (optional)" input type="number" min="1" name="spend_cap" value=(form.spend_cap); }
                    label { "Cap period"
                        select name="spend_period" {
                            @for (v, text) in [("", "ever"), ("month", "each month")] {
                                option value=(v) selected[form.spend_period == v] { (text) }
                            }
                        }
                    }
                }
                button type="submit" id="create" { "Create key" }
            }
        },
    )
}

/// The page of a new (or rotated) key: the key, once.
pub fn created(nav: &Nav, title: &str, key: &str, view: &KeyView, note: Option<&str>) -> Markup {
    layout(
        title,
        Some(nav),
        html! {
            p { "Key " strong { (view.name) } " (" code { (view.api_key_prefix) "…" } ", "
                (view.environment.as_str()) ", scopes " (view.scopes.join(" ")) ")." }
            @if let Some(note) = note { p { (note) } }
            (shown_once("key", key))
            p { a.button href="/dashboard/keys" id="back-to-keys" { "Done" } }
        },
    )
}

/// One key: its fields and its usage chart over `range`.
pub fn key_page(nav: &Nav, key: &KeyView, now: &str, points: &[Point], range: &str) -> Markup {
    let state = status(key, now);
    let total: u64 = points.iter().map(|p| p.allowed + p.refused).sum();
    let cost: u64 = points.iter().map(|p| p.cost_micros).sum();
    layout(
        &key.name,
        Some(nav),
        html! {
            dl.fields {
                dt { "Id" } dd { code { (key.id.to_string()) } }
                dt { "Key" } dd { code { (key.api_key_prefix) "…" } }
                dt { "Environment" } dd { (key.environment.as_str()) }
                dt { "Scopes" } dd { (key.scopes.join(" ")) }
                dt { "Tier / limits" } dd { (limits(key)) }
                dt { "External id" } dd { (or_dash(key.external_id.as_ref())) }
                dt { "Created" } dd { (key.created_at) }
                dt { "Expires" } dd { (or_dash(key.expires_at.as_ref())) }
                dt { "Last used" } dd { (or_dash(key.last_used_at.as_ref())) }
                dt { "Status" } dd { span class=(format!("status {state}")) { (state) } }
            }
            h2 { "Usage" }
            p.ranges {
                @for (r, label) in [("24h", "24 hours"), ("7d", "7 days"), ("30d", "30 days")] {
                    @if r == range { strong { (label) } } @else {
                        a href=(format!("/dashboard/keys/{}?range={r}", key.id)) { (label) }
                    }
                    " "
                }
            }
            p { (total) " requests, cost " (cost) " micro-units. "
                span.legend-allowed { "■ allowed" } " " span.legend-refused { "■ refused" } " "
                span.legend-cost { "— cost" } }
            (chart::usage_chart(points))
            @if matches!(state, "active" | "exhausted") {
                p {
                    a.button href=(format!("/dashboard/keys/{}/rotate", key.id)) { "Rotate" } " "
                    a.button.danger href=(format!("/dashboard/keys/{}/revoke", key.id)) id="revoke" { "Revoke" }
                }
            }
        },
    )
}

/// The revoke confirmation.
pub fn revoke_confirm(nav: &Nav, key: &KeyView) -> Markup {
    layout(
        "Revoke key",
        Some(nav),
        html! {
            p { "Revoke " strong { (key.name) } " (" code { (key.api_key_prefix) "…" } ")? "
                "Every request with it is refused within a second. This cannot be undone." }
            form method="post" action=(format!("/dashboard/keys/{}/revoke", key.id)) {
                (csrf_field(nav.csrf))
                button.danger type="submit" id="confirm-revoke" { "Revoke key" }
                " " a href="/dashboard/keys" { "Cancel" }
            }
        },
    )
}

/// The rotate form: the grace period of the old key.
pub fn rotate_form(nav: &Nav, key: &KeyView, error: Option<&str>) -> Markup {
    layout(
        "Rotate key",
        Some(nav),
        html! {
            (error_box(error))
            p { "Replace " strong { (key.name) } " (" code { (key.api_key_prefix) "…" } ") by a new key with the same settings." }
            form.card method="post" action=(format!("/dashboard/keys/{}/rotate", key.id)) {
                (csrf_field(nav.csrf))
                label { "The old key keeps working for"
                    select name="grace_seconds" id="grace" {
                        option value="0" { "no time: it dies now" }
                        option value="3600" selected { "1 hour" }
                        option value="86400" { "1 day" }
                        option value="604800" { "7 days" }
                    }
                }
                button type="submit" id="rotate" { "Rotate key" }
                " " a href="/dashboard/keys" { "Cancel" }
            }
        },
    )
}

/// A refusal or failure, with a way on.
pub fn error_page(nav: Option<&Nav>, title: &str, message: &str) -> Markup {
    layout(
        title,
        nav,
        html! {
            p.error role="alert" { (message) }
            p { a href="/dashboard" { "Back to the dashboard" } }
        },
    )
}

/// The webhooks page: the tenant's webhooks (never their secrets), each
/// with a delete button, and the form to add one.
pub fn webhooks(nav: &Nav, hooks: &[WebhookView], events: &[&str], error: Option<&str>) -> Markup {
    layout(
        "Webhooks",
        Some(nav),
        html! {
            (error_box(error))
            table.webhooks {
                thead { tr { th { "URL" } th { "Events" } th { "Created" } th {} } }
                tbody {
                    @for hook in hooks {
                        tr data-webhook-id=(hook.id) {
                            td { code { (hook.url) } }
                            td { (hook.events.join(" ")) }
                            td { (hook.created_at) }
                            td.actions {
                                form.inline method="post" action=(format!("/dashboard/webhooks/{}/delete", hook.id)) {
                                    (csrf_field(nav.csrf))
                                    button.danger type="submit" { "Delete" }
                                }
                            }
                        }
                    }
                }
            }
            form.card method="post" action="/dashboard/webhooks" {
                (csrf_field(nav.csrf))
                label { "URL" input type="url" name="url" required maxlength="2048"; }
                fieldset { legend { "Events" }
                    @for e in events {
                        label.check { input type="checkbox" name="events" value=(e) checked; " " (e) }
                    }
                }
                button type="submit" id="add-webhook" { "Add webhook" }
            }
        },
    )
}

/// A new webhook: its signing secret, once.
pub fn webhook_created(nav: &Nav, created: &CreatedWebhook) -> Markup {
    layout(
        "Webhook added",
        Some(nav),
        html! {
            p { "Deliveries to " code { (created.webhook.url) } " are signed with this secret "
                "(header " code { "keygate-signature" } ")." }
            (shown_once("signing secret", &created.secret))
            p { a.button href="/dashboard/webhooks" { "Done" } }
        },
    )
}

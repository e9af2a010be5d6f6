//! Plans (SPEC §10): what the operator lets each tenant do — the rate-limit
//! tiers its keys may use, the ceilings of a key's own `rate_limits`, and
//! the rate of its management-API calls, and the scopes a key created
//! without `scopes` holds (`default_key_scopes`). Read once at start from
//! `--plans plans.toml`, or built from `--tiers` when no file is given.
//!
//! A tenant can never raise its own plan: a tier or limit outside it is a
//! 403 naming it ([`Plan::check_tier`], [`Plan::check_limits`]).

use crate::errors::ApiError;
use crate::policy::MintPolicy;
use serde::Deserialize;
use std::path::Path;

/// SPEC §10: management calls per second of a tenant, by default.
pub const DEFAULT_MANAGEMENT_RATE: u32 = 20;
/// SPEC §10: management calls a tenant may make at once, by default.
pub const DEFAULT_MANAGEMENT_BURST: u32 = 200;
/// Longest plan name.
const MAX_PLAN_NAME: usize = 64;
/// The scope a key gets only when asked for (SPEC §16): it manages keys.
pub const ADMIN_SCOPE: &str = "tenant:admin";

/// The ceilings of a key's own `rate_limits` (`None`: no ceiling).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ceilings {
    pub per_minute: Option<u64>,
    pub per_day: Option<u64>,
}

/// The management-API token bucket of a tenant: `rate` calls per second,
/// at most `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManagementRate {
    #[serde(default = "default_rate")]
    pub rate: u32,
    #[serde(default = "default_burst")]
    pub burst: u32,
}

fn default_rate() -> u32 {
    DEFAULT_MANAGEMENT_RATE
}

fn default_burst() -> u32 {
    DEFAULT_MANAGEMENT_BURST
}

impl Default for ManagementRate {
    fn default() -> Self {
        ManagementRate {
            rate: DEFAULT_MANAGEMENT_RATE,
            burst: DEFAULT_MANAGEMENT_BURST,
        }
    }
}

/// One plan.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    pub name: String,
    /// The tiers its keys may use (always including the default tier).
    pub tiers: Vec<String>,
    #[serde(default)]
    pub rate_limits: Ceilings,
    #[serde(default)]
    pub management: ManagementRate,
    /// The scopes of a key created without `scopes` (each one of
    /// `--allowed-scopes`); absent: every allowed scope but `tenant:admin`.
    #[serde(default)]
    pub default_key_scopes: Option<Vec<String>>,
}

/// `plans.toml`: `[[plan]]` tables.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PlansFile {
    plan: Vec<Plan>,
}

fn forbidden_limit(field: &str, asked: u64, plan: &str, ceiling: u64) -> ApiError {
    ApiError::Forbidden(format!(
        "{field} {asked} is above the ceiling of plan {plan} ({ceiling})"
    ))
}

impl Plan {
    /// True if keys of this plan may use `tier`.
    pub fn allows_tier(&self, tier: &str) -> bool {
        self.tiers.iter().any(|t| t == tier)
    }

    /// 403 naming the tier and the plan unless the plan allows `tier`.
    pub fn check_tier(&self, tier: &str) -> Result<(), ApiError> {
        if self.allows_tier(tier) {
            return Ok(());
        }
        Err(ApiError::Forbidden(format!(
            "rate_limit_tier {tier} is not allowed on plan {} (allowed: {})",
            self.name,
            self.tiers.join(", ")
        )))
    }

    /// 403 naming `rate_limits.per_minute` or `rate_limits.per_day` when a
    /// key's own limit asked for is above this plan's ceiling.
    pub fn check_limits(
        &self,
        per_minute: Option<u64>,
        per_day: Option<u64>,
    ) -> Result<(), ApiError> {
        let asked = [
            (
                "rate_limits.per_minute",
                per_minute,
                self.rate_limits.per_minute,
            ),
            ("rate_limits.per_day", per_day, self.rate_limits.per_day),
        ];
        for (field, asked, ceiling) in asked {
            if let (Some(asked), Some(ceiling)) = (asked, ceiling) {
                if asked > ceiling {
                    return Err(forbidden_limit(field, asked, &self.name, ceiling));
                }
            }
        }
        Ok(())
    }

    /// The scopes (space-separated) of a key of this plan created without
    /// `scopes`: the plan's `default_key_scopes`, or every scope `policy`
    /// allows but [`ADMIN_SCOPE`] (all of them if that is the only one).
    pub fn default_key_scopes(&self, policy: &MintPolicy) -> String {
        if let Some(scopes) = &self.default_key_scopes {
            return scopes.join(" ");
        }
        let plain: Vec<&str> = policy
            .scopes
            .iter()
            .map(String::as_str)
            .filter(|s| *s != ADMIN_SCOPE)
            .collect();
        match plain.is_empty() {
            true => policy.all_scopes(),
            false => plain.join(" "),
        }
    }

    /// Checks `default_key_scopes`: at least one, each allowed, no duplicate.
    fn validate_default_scopes(&self, allowed: &[String]) -> Result<(), String> {
        let Some(scopes) = &self.default_key_scopes else {
            return Ok(());
        };
        let name = &self.name;
        if scopes.is_empty() {
            return Err(format!(
                "plan {name:?}: default_key_scopes: must name at least one scope"
            ));
        }
        if let Some(bad) = scopes.iter().find(|s| !allowed.contains(s)) {
            return Err(format!(
                "plan {name:?}: default_key_scopes: {bad:?} is not one of --allowed-scopes ({})",
                allowed.join(", ")
            ));
        }
        let repeated = |(i, s): &(usize, &String)| scopes.iter().take(*i).any(|o| o == *s);
        if let Some((_, twice)) = scopes.iter().enumerate().find(repeated) {
            return Err(format!(
                "plan {name:?}: default_key_scopes: {twice:?} is named twice"
            ));
        }
        Ok(())
    }

    /// Checks one plan against the tiers and allowed scopes; the error
    /// names the plan and field.
    fn validate(&self, tiers: &[String], scopes: &[String]) -> Result<(), String> {
        self.validate_default_scopes(scopes)?;
        let name = &self.name;
        let plan_ok = (1..=MAX_PLAN_NAME).contains(&name.len())
            && name
                .bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_' || c == b'-');
        if !plan_ok {
            return Err(format!(
                "plan {name:?}: name: must be 1-{MAX_PLAN_NAME} of a-z 0-9 _ -"
            ));
        }
        if let Some(bad) = self.tiers.iter().find(|t| !tiers.contains(t)) {
            return Err(format!(
                "plan {name:?}: tiers: {bad:?} is not one of --tiers ({})",
                tiers.join(", ")
            ));
        }
        if let Some(default) = tiers.first().filter(|d| !self.allows_tier(d)) {
            return Err(format!(
                "plan {name:?}: tiers: must include the default tier {default:?} (the first of --tiers)"
            ));
        }
        let m = self.management;
        if m.rate == 0 || m.burst == 0 {
            return Err(format!(
                "plan {name:?}: management: rate and burst must be at least 1"
            ));
        }
        if self.rate_limits.per_minute == Some(0) || self.rate_limits.per_day == Some(0) {
            return Err(format!(
                "plan {name:?}: rate_limits: a ceiling must be at least 1"
            ));
        }
        Ok(())
    }
}

/// Every plan, and the one new tenants get.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plans {
    plans: Vec<Plan>,
    default: Plan,
}

impl Plans {
    /// The built-in plans of `tiers`: one per tier, named like it, allowing
    /// it and every tier before it (`free`: free; `pro`: free and pro), no
    /// ceiling on a key's own limits, the default management rate.
    pub fn built_in(tiers: &[String]) -> Vec<Plan> {
        (1..=tiers.len())
            .filter_map(|n| {
                let allowed = tiers.get(..n)?;
                Some(Plan {
                    name: allowed.last()?.clone(),
                    tiers: allowed.to_vec(),
                    rate_limits: Ceilings::default(),
                    management: ManagementRate::default(),
                    default_key_scopes: None,
                })
            })
            .collect()
    }

    /// Parses a plans file (`[[plan]]` tables); errors give the line.
    pub fn parse(text: &str) -> Result<Vec<Plan>, String> {
        toml::from_str::<PlansFile>(text)
            .map(|file| file.plan)
            .map_err(|e| e.to_string().trim_end().to_string())
    }

    /// Checks `plans` against the tiers and allowed scopes of `policy` and
    /// picks `default` (by name; `None`: the first plan). Errors name the
    /// plan and its bad field.
    pub fn new(
        plans: Vec<Plan>,
        policy: &MintPolicy,
        default: Option<&str>,
    ) -> Result<Plans, String> {
        for (i, plan) in plans.iter().enumerate() {
            plan.validate(&policy.tiers, &policy.scopes)?;
            if plans.iter().take(i).any(|p| p.name == plan.name) {
                return Err(format!("plan {:?}: name: defined twice", plan.name));
            }
        }
        let chosen = match default {
            None => plans.first(),
            Some(name) => plans.iter().find(|p| p.name == name),
        };
        let Some(default) = chosen.cloned() else {
            let names: Vec<&str> = plans.iter().map(|p| p.name.as_str()).collect();
            return Err(match default {
                None => "at least one [[plan]] is needed".to_string(),
                Some(name) => format!(
                    "--default-plan: {name:?} is not a plan (plans: {})",
                    names.join(", ")
                ),
            });
        };
        Ok(Plans { plans, default })
    }

    /// The plans of `--plans FILE` (or the built-in ones without a file)
    /// and `--default-plan`; the error names the file, plan and field.
    pub fn load(
        file: Option<&Path>,
        policy: &MintPolicy,
        default: Option<&str>,
    ) -> Result<Plans, String> {
        let Some(file) = file else {
            return Plans::new(Plans::built_in(&policy.tiers), policy, default);
        };
        let shown = file.display();
        let text = std::fs::read_to_string(file)
            .map_err(|e| format!("--plans {shown}: cannot read: {e}"))?;
        let plans = Plans::parse(&text).map_err(|e| format!("--plans {shown}: {e}"))?;
        Plans::new(plans, policy, default).map_err(|e| match e.starts_with("--default-plan") {
            true => e,
            false => format!("--plans {shown}: {e}"),
        })
    }

    /// The plan named `name`, if there is one.
    pub fn get(&self, name: &str) -> Option<&Plan> {
        self.plans.iter().find(|p| p.name == name)
    }

    /// The plan new tenants get.
    pub fn default_plan(&self) -> &Plan {
        &self.default
    }

    /// A plan to set, or the 400 naming `field` if there is none so named.
    pub fn named(&self, name: &str, field: &str) -> Result<&Plan, ApiError> {
        self.get(name).ok_or_else(|| {
            let names: Vec<&str> = self.plans.iter().map(|p| p.name.as_str()).collect();
            ApiError::invalid(
                field,
                format!("{field} must be one of: {}", names.join(", ")),
            )
        })
    }

    /// True if a plan is named `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiers(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    /// The policy of `tiers`, with the default scopes of SPEC §5 in part.
    fn policy(t: &[String]) -> MintPolicy {
        let scopes = tiers(&["users:read", "users:write", "tenant:read", "tenant:admin"]);
        MintPolicy::new("rk", scopes, t.to_vec()).unwrap()
    }

    fn message(e: ApiError) -> String {
        match e {
            ApiError::Forbidden(message) => message,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn built_in_plans_follow_the_tiers() {
        let t = tiers(&["free", "pro", "team"]);
        let plans = Plans::new(Plans::built_in(&t), &policy(&t), None).unwrap();
        assert_eq!(plans.default_plan().name, "free");
        assert_eq!(plans.default_plan().tiers, tiers(&["free"]));
        assert_eq!(plans.get("pro").unwrap().tiers, tiers(&["free", "pro"]));
        assert_eq!(plans.get("team").unwrap().tiers, t);
        let free = plans.default_plan();
        assert_eq!(
            free.management,
            ManagementRate {
                rate: 20,
                burst: 200
            }
        );
        assert!(free.check_limits(Some(60), Some(10_000)).is_ok());
        assert!(free.check_tier("free").is_ok());
        let refused = message(free.check_tier("pro").unwrap_err());
        assert!(
            refused.contains("pro") && refused.contains("plan free"),
            "{refused}"
        );
        let chosen = Plans::new(Plans::built_in(&t), &policy(&t), Some("pro")).unwrap();
        assert_eq!(chosen.default_plan().name, "pro");
        let bad = Plans::new(Plans::built_in(&t), &policy(&t), Some("gold")).unwrap_err();
        assert!(
            bad.starts_with("--default-plan") && bad.contains("gold"),
            "{bad}"
        );
    }

    #[test]
    fn limits_above_the_ceiling_name_the_field() {
        let plan = Plan {
            name: "free".into(),
            tiers: tiers(&["free"]),
            rate_limits: Ceilings {
                per_minute: Some(60),
                per_day: Some(10_000),
            },
            management: ManagementRate::default(),
            default_key_scopes: None,
        };
        assert!(plan.check_limits(Some(60), Some(10_000)).is_ok());
        assert!(plan.check_limits(None, None).is_ok());
        let minute = message(plan.check_limits(Some(61), None).unwrap_err());
        assert!(
            minute.contains("rate_limits.per_minute") && minute.contains("free"),
            "{minute}"
        );
        let day = message(plan.check_limits(Some(1), Some(10_001)).unwrap_err());
        assert!(day.contains("rate_limits.per_day"), "{day}");
    }

    #[test]
    fn a_file_parses_with_defaults() {
        let text = r#"
            [[plan]]
            name = "free"
            tiers = ["free"]
            rate_limits = { per_minute = 60 }

            [[plan]]
            name = "pro"
            tiers = ["free", "pro"]
            management = { rate = 100, burst = 1000 }
        "#;
        let t = tiers(&["free", "pro"]);
        let plans = Plans::new(Plans::parse(text).unwrap(), &policy(&t), None).unwrap();
        let free = plans.default_plan();
        assert_eq!(free.rate_limits.per_minute, Some(60));
        assert_eq!(free.rate_limits.per_day, None);
        assert_eq!(free.management, ManagementRate::default());
        assert_eq!(plans.get("pro").unwrap().management.burst, 1000);
    }

    #[test]
    fn bad_files_name_the_line_or_the_field() {
        let t = tiers(&["free", "pro"]);
        let check = |text: &str| {
            Plans::parse(text).and_then(|plans| Plans::new(plans, &policy(&t), None).map(|_| ()))
        };
        let unknown =
            check("[[plan]]\nname = \"free\"\ntiers = [\"free\"]\ncolour = 1\n").unwrap_err();
        assert!(
            unknown.contains("line 4") && unknown.contains("colour"),
            "{unknown}"
        );
        let mistyped = check("[[plan]]\nname = \"free\"\ntiers = \"free\"\n").unwrap_err();
        assert!(mistyped.contains("line 3"), "{mistyped}");
        let tier = check("[[plan]]\nname = \"x\"\ntiers = [\"free\", \"gold\"]\n").unwrap_err();
        assert!(tier.contains("tiers") && tier.contains("gold"), "{tier}");
        let floor = check("[[plan]]\nname = \"x\"\ntiers = [\"pro\"]\n").unwrap_err();
        assert!(floor.contains("default tier"), "{floor}");
        let twice = check("[[plan]]\nname = \"x\"\ntiers = [\"free\"]\n[[plan]]\nname = \"x\"\ntiers = [\"free\"]\n")
            .unwrap_err();
        assert!(twice.contains("defined twice"), "{twice}");
        let zero = check("[[plan]]\nname = \"x\"\ntiers = [\"free\"]\nmanagement = { rate = 0 }\n")
            .unwrap_err();
        assert!(zero.contains("management"), "{zero}");
        assert!(check("").unwrap_err().contains("plan"));
        let plan = |scopes: &str| {
            format!("[[plan]]\nname = \"x\"\ntiers = [\"free\"]\ndefault_key_scopes = {scopes}\n")
        };
        for (scopes, says) in [
            ("[]", "at least one"),
            ("[\"b:read\"]", "b:read"),
            ("[\"users:read\", \"users:read\"]", "twice"),
        ] {
            let bad = check(&plan(scopes)).unwrap_err();
            assert!(
                bad.contains("default_key_scopes") && bad.contains(says),
                "{bad}"
            );
        }
    }

    #[test]
    fn default_key_scopes_leave_out_tenant_admin_unless_the_plan_names_them() {
        let t = tiers(&["free", "pro"]);
        let p = policy(&t);
        let text = "[[plan]]\nname = \"free\"\ntiers = [\"free\"]\n[[plan]]\nname = \"pro\"\ntiers = [\"free\", \"pro\"]\ndefault_key_scopes = [\"users:read\", \"tenant:admin\"]\n";
        let plans = Plans::new(Plans::parse(text).unwrap(), &p, None).unwrap();
        assert_eq!(
            plans.default_plan().default_key_scopes(&p),
            "users:read users:write tenant:read"
        );
        let pro = plans.get("pro").unwrap();
        assert_eq!(pro.default_key_scopes(&p), "users:read tenant:admin");
        let admin_only = MintPolicy::new("rk", tiers(&["tenant:admin"]), t.clone()).unwrap();
        assert_eq!(
            plans.default_plan().default_key_scopes(&admin_only),
            "tenant:admin"
        );
    }

    #[test]
    fn the_shipped_example_is_valid() {
        let text = include_str!("../../plans.example.toml");
        let t = tiers(&["free", "pro"]);
        let plans = Plans::new(Plans::parse(text).unwrap(), &policy(&t), None).unwrap();
        assert!(plans
            .default_plan()
            .check_limits(Some(60), Some(10_000))
            .is_ok());
    }
}

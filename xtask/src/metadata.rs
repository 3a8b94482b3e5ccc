//! The workspace's members as `cargo metadata` describes them: name, whether they are
//! published, and their features. The packaging, feature and audit steps read the crates from
//! here rather than from a list in xtask, so a new crate or feature is covered by itself.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::cmd::Cmd;

/// One workspace member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub name: String,
    /// False where the manifest says `publish = false`.
    pub publish: bool,
    /// `[features]`: each feature and what it turns on (features, `dep:x`, `x/feature`).
    pub features: BTreeMap<String, Vec<String>>,
}

/// The workspace's members, in `cargo metadata`'s order.
pub fn members() -> Result<Vec<Member>, String> {
    let json = Cmd::cargo(&["metadata", "--format-version", "1", "--no-deps"]).run_for_output()?;
    parse(&json)
}

/// The members in `cargo metadata --no-deps` JSON (whose `packages` are exactly the members).
fn parse(json: &str) -> Result<Vec<Member>, String> {
    let root: Value =
        serde_json::from_str(json).map_err(|error| format!("cargo metadata: {error}"))?;
    let packages = root["packages"]
        .as_array()
        .ok_or("cargo metadata: no `packages` list")?;
    packages.iter().map(member).collect()
}

fn member(package: &Value) -> Result<Member, String> {
    let name = package["name"]
        .as_str()
        .ok_or("cargo metadata: a package without a name")?;
    // `publish` is null for "any registry", else the registries allowed: `[]` is `false`.
    let publish = !package["publish"]
        .as_array()
        .is_some_and(|registries| registries.is_empty());
    let mut features = BTreeMap::new();
    let table = package["features"]
        .as_object()
        .ok_or_else(|| format!("cargo metadata: {name} has no `features`"))?;
    for (feature, enables) in table {
        let enables = enables
            .as_array()
            .ok_or_else(|| format!("cargo metadata: {name}'s feature {feature}"))?;
        let enables = enables
            .iter()
            .filter_map(|item| item.as_str().map(str::to_owned))
            .collect();
        features.insert(feature.clone(), enables);
    }
    Ok(Member {
        name: name.to_owned(),
        publish,
        features,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_are_read_with_their_features_and_publish_flag() {
        let json = r#"{"packages": [
            {"name": "sys-kqueue", "publish": null,
             "features": {"default": ["fake"], "fake": []}},
            {"name": "xtask", "publish": [], "features": {}},
            {"name": "private-registry", "publish": ["mine"], "features": {}}
        ], "workspace_members": []}"#;
        let members = parse(json).unwrap();
        let names: Vec<(&str, bool)> = members
            .iter()
            .map(|member| (member.name.as_str(), member.publish))
            .collect();
        assert_eq!(
            names,
            [
                ("sys-kqueue", true),
                ("xtask", false),
                ("private-registry", true)
            ]
        );
        assert_eq!(members[0].features["default"], ["fake"]);
        assert!(members[0].features["fake"].is_empty());
        assert!(parse(r#"{"packages": [{"name": "x"}]}"#).is_err());
    }
}

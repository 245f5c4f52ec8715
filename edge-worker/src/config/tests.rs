use super::*;

const EXAMPLE: &str = include_str!("../../../waymark.example.toml");

#[test]
fn embedded_default_parses() {
    let config = Config::embedded_default();
    assert_eq!(config.sources[0].write_key, "wk_demo");
    assert_eq!(config.server.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(config.destinations[0].kind, "file");
    assert_eq!(
        config.destinations[0]
            .type_settings()
            .get("path")
            .and_then(|v| v.as_str()),
        Some("events.ndjson")
    );
}

#[test]
fn example_file_parses() {
    std::env::set_var("WAYMARK_COOKIE_KEY_K1", "0123456789abcdef0123456789abcdef");
    std::env::set_var("WAYMARK_ADMIN_TOKEN", "admin-token-for-tests");
    let config = Config::parse(EXAMPLE).expect("waymark.example.toml parses");
    assert!(!config.destinations.is_empty());
}

fn with(extra: &str) -> Result<Config, ConfigError> {
    let base = r#"
[identity]
keys = [{ id = "k1", secret = "0123456789abcdef0123456789abcdef" }]
[[sources]]
name = "web"
write_key = "wk_test"
"#;
    Config::parse(&format!("{base}\n{extra}"))
}

#[test]
fn a_misspelt_key_is_named() {
    let err = Config::parse("[server]\nlisten = \"127.0.0.1:1\"\nlistn = 1\n").unwrap_err();
    assert!(err.to_string().contains("listn"), "{err}");
    let err = with("[[sources]]\nname=\"x\"\nwirte_key=\"a\"").unwrap_err();
    assert!(err.to_string().contains("wirte_key"), "{err}");
}

#[test]
fn bad_values_name_the_key_and_the_fix() {
    let cases = [
        ("[limits]\nmax_depth = 0", "limits.max_depth"),
        (
            "[limits]\ndedup_window_secs = 60",
            "limits.dedup_window_secs",
        ),
        (
            "[[destinations]]\nname=\"a\"\ntype=\"file\"\nrules=[\"nope\"]",
            "destinations[0].rules",
        ),
        (
            "[[destinations]]\nname=\"a\"\ntype=\"file\"\nfilter={include_types=[\"click\"]}",
            "destinations[0].filter.include_types",
        ),
        (
            "[[sources]]\nname=\"web\"\nwrite_key=\"wk_2\"",
            "sources[1]",
        ),
    ];
    for (extra, key) in cases {
        let err = with(extra).unwrap_err().to_string();
        assert!(err.contains(key), "expected `{key}` in `{err}`");
    }
}

#[test]
fn a_bad_origin_is_rejected() {
    let err = Config::parse(
        r#"
[identity]
keys = [{ id = "k1", secret = "0123456789abcdef0123456789abcdef" }]
[[sources]]
name = "web"
write_key = "wk_test"
allowed_origins = ["shop.example.com"]
"#,
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("sources[0].allowed_origins"),
        "{err}"
    );
}

#[test]
fn secrets_come_from_the_environment() {
    let text = r#"
[identity]
keys = [{ id = "k1", secret_env = "WAYMARK_TEST_UNSET_KEY_VAR" }]
[[sources]]
name = "web"
write_key = "wk_test"
"#;
    let err = Config::parse(text).unwrap_err().to_string();
    assert!(err.contains("WAYMARK_TEST_UNSET_KEY_VAR"), "{err}");
    std::env::set_var(
        "WAYMARK_TEST_SET_KEY_VAR",
        "0123456789abcdef0123456789abcdef",
    );
    let ok = text.replace("WAYMARK_TEST_UNSET_KEY_VAR", "WAYMARK_TEST_SET_KEY_VAR");
    assert!(Config::parse(&ok).is_ok());
}

#[test]
fn short_cookie_secrets_are_refused() {
    let err = Config::parse(
        "[identity]\nkeys=[{id=\"k1\",secret=\"short\"}]\n[[sources]]\nname=\"w\"\nwrite_key=\"wk_test\"",
    )
    .unwrap_err();
    assert!(err.to_string().contains("at least 32"), "{err}");
}

#[test]
fn origins_match_without_trailing_slash() {
    let config = with("").unwrap();
    let mut source = config.sources[0].clone();
    source.allowed_origins = vec!["https://shop.example.com/".into()];
    assert!(source.allows_origin("https://shop.example.com"));
    assert!(!source.allows_origin("https://evil.example.com"));
}

/// The README's configuration reference names every key of the schema, so
/// the reference cannot silently fall behind the config structs.
#[test]
fn the_readme_reference_names_every_key() {
    let readme = include_str!("../../../README.md");
    let reference = readme
        .split("## Configuration reference")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("README has a Configuration reference section");
    let schema = serde_json::to_value(schemars::schema_for!(Config)).unwrap();
    let mut missing = Vec::new();
    let mut collect = |props: &serde_json::Value| {
        if let Some(props) = props.as_object() {
            for key in props.keys() {
                let named = [format!("`{key}`"), format!("[{key}]"), format!("[[{key}]]")];
                if !named.iter().any(|n| reference.contains(n.as_str())) {
                    missing.push(key.clone());
                }
            }
        }
    };
    collect(&schema["properties"]);
    if let Some(defs) = schema["$defs"].as_object() {
        for def in defs.values() {
            collect(&def["properties"]);
        }
    }
    missing.sort();
    missing.dedup();
    assert!(
        missing.is_empty(),
        "README.md's configuration reference does not mention: {missing:?}"
    );
}

#[test]
fn edge_server_keys_parse_and_bad_ones_name_the_fix() {
    let config = with(
        "[server]\ntrusted_proxies = [\"10.0.0.0/8\", \"2001:db8::/32\"]\nclient_ip_header = \"cf-connecting-ip\"\npath_prefix = \"/metrics\"",
    )
    .unwrap();
    assert_eq!(config.server.trusted_proxies.len(), 2);
    assert_eq!(
        config.server.client_ip_header,
        crate::http::client_ip::ClientIpHeader::CfConnectingIp
    );
    assert_eq!(config.server.prefix(), "/metrics");
    assert!(config
        .server
        .proxy_trust()
        .trusts("10.1.2.3".parse().unwrap()));
    assert!(!config
        .server
        .proxy_trust()
        .trusts("8.8.8.8".parse().unwrap()));
    // Nothing trusted by default.
    let plain = with("").unwrap();
    assert!(!plain
        .server
        .proxy_trust()
        .trusts("127.0.0.1".parse().unwrap()));
    // The deprecated key trusts private peers only.
    let legacy = with("[server]\ntrusted_proxy_header = \"X-Forwarded-For\"").unwrap();
    assert!(legacy
        .server
        .proxy_trust()
        .trusts("127.0.0.1".parse().unwrap()));
    assert!(!legacy
        .server
        .proxy_trust()
        .trusts("203.0.113.1".parse().unwrap()));
    for (extra, needle) in [
        ("[server]\ntrusted_proxies = [\"10.0.0.0/40\"]", "0 to 32"),
        ("[server]\ntrusted_proxies = [\"office\"]", "10.0.0.0/8"),
        (
            "[server]\nclient_ip_header = \"x-client-ip\"",
            "x-client-ip",
        ),
        ("[server]\npath_prefix = \"metrics\"", "server.path_prefix"),
        (
            "[server]\npath_prefix = \"/metrics/\"",
            "server.path_prefix",
        ),
        ("[server]\npath_prefix = \"/\"", "server.path_prefix"),
        (
            "[server]\ntrusted_proxy_header = \"x-client-ip\"",
            "trusted_proxies",
        ),
    ] {
        let err = with(extra).unwrap_err().to_string();
        assert!(err.contains(needle), "{extra}: {err}");
    }
}

#[test]
fn sources_may_count_cookieless() {
    let config = with("").unwrap();
    assert!(!config.sources[0].cookieless);
    let config = Config::parse(
        "[identity]\nkeys = [{ id = \"k1\", secret = \"0123456789abcdef0123456789abcdef\" }]\n[[sources]]\nname = \"web\"\nwrite_key = \"wk_web\"\ncookieless = true\n",
    )
    .unwrap();
    assert!(config.sources[0].cookieless);
}

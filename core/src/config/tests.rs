use super::*;

#[test]
fn the_secrets_a_config_file_holds_are_named() {
    let text = "[redis]\nurl = \"redis://app:pw@h:1\"\n\
                [endpoints.a]\nsecret_access_key = \"s\"\n\
                [endpoints.b]\nsecret_access_key_env = \"B_SECRET\"\n";
    assert_eq!(
        secrets_held(text),
        ["endpoints.a.secret_access_key", "redis.url (a password)"]
    );
    assert!(secrets_held("[redis]\nurl = \"redis://h:1\"\n").is_empty());
    assert!(secrets_held("[redis]\nurls = [\"redis://h:1\", \"redis://:p@g:2\"]\n").len() == 1);
}

#[test]
fn known_secrets_and_url_passwords_are_redacted_from_any_text() {
    let secret = Secret::new("s3cr3t-redaction-test".into());
    let redis = RedisConfig::new("redis://u:p%40ss-redaction@h:1", "ns");
    redis.remember_passwords();
    let text = format!(
        "key {} at redis://u:other-pass@h:1 and p@ss-redaction, p%40ss-redaction",
        secret.expose()
    );
    let shown = redact_known(&text);
    assert_eq!(shown, "key *** at redis://***@h:1 and ***, ***");
}

#[test]
fn redact_url_hides_the_whole_userinfo() {
    assert_eq!(
        redact_url("redis://127.0.0.1:6379"),
        "redis://127.0.0.1:6379"
    );
    assert_eq!(
        redact_url("rediss://app:hunter2@redis.example:6380/0"),
        "rediss://***@redis.example:6380/0"
    );
    assert_eq!(redact_url("redis://:pw@h:1"), "redis://***@h:1");
    assert_eq!(redact_url("redis://tokenonly@h:1"), "redis://***@h:1");
    // A password holding '/', '@' and ':' as written, not encoded.
    let url = "redis://app:p/a@s:s#w@redis.example:6380/2";
    let shown = redact_url(url);
    assert_eq!(shown, "redis://***@redis.example:6380/2");
    assert!(!shown.contains("p/a"));
}

#[test]
fn passwords_with_url_characters_reach_the_client_encoded() {
    let config = RedisConfig::new("redis://app:p/a@s:s%w@redis.example:6380/2", "ferry");
    assert_eq!(
        config.connection_url(),
        "redis://app:p%2Fa%40s%3As%25w@redis.example:6380/2"
    );
    // Already encoded passwords are not encoded twice.
    let config = RedisConfig::new("redis://:p%2Fw@h:1", "ferry");
    assert_eq!(config.connection_url(), "redis://:p%2Fw@h:1");
    assert!(!format!("{config:?}").contains("p%2Fw"));
}

//! `[proxy.auth]`: the credentials clients must present to turnout itself.
//!
//! These are turnout's own downstream credentials, separate from whatever the endpoints
//! require. Passwords come from an environment variable or a file, never from the config
//! text, and are compared in constant time.

use super::{problem, Problem, Secret};
use serde::Deserialize;
use subtle::ConstantTimeEq;

/// Longest password accepted: comparisons pad to this length so they take the same time
/// whatever the secret's length.
pub const MAX_PASSWORD: usize = 512;

/// `[proxy.auth]` as written.
#[derive(Debug, Deserialize)]
pub struct FileAuth {
    /// Users; `default` is the one `AUTH <password>` checks.
    pub users: Vec<FileUser>,
}

/// `[[proxy.auth.users]]` as written.
#[derive(Debug, Deserialize)]
pub struct FileUser {
    /// User name (`default` for plain `AUTH <password>`).
    pub name: String,
    /// Environment variable holding the password.
    pub password_env: Option<String>,
    /// File holding the password (trailing newline ignored).
    pub password_file: Option<String>,
}

/// Validated downstream credentials.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    users: Vec<(String, Secret)>,
}

impl AuthConfig {
    /// Whether `user` / `password` match a configured user, in time independent of the
    /// secrets (the user name is not secret).
    pub fn check(&self, user: &[u8], password: &[u8]) -> bool {
        let Some((_, secret)) = self.users.iter().find(|(name, _)| name.as_bytes() == user) else {
            // Spend the same work as a real comparison before refusing.
            let _ = padded_eq(password, &[0u8; 0]);
            return false;
        };
        padded_eq(password, secret.expose().as_bytes())
    }
}

/// Constant-time equality over `MAX_PASSWORD` bytes plus the lengths.
fn padded_eq(given: &[u8], expected: &[u8]) -> bool {
    let mut a = [0u8; MAX_PASSWORD];
    let mut b = [0u8; MAX_PASSWORD];
    let n = given.len().min(MAX_PASSWORD);
    a[..n].copy_from_slice(&given[..n]);
    let m = expected.len().min(MAX_PASSWORD);
    b[..m].copy_from_slice(&expected[..m]);
    let same_bytes = a.ct_eq(&b);
    let same_len = (given.len() as u64).ct_eq(&(expected.len() as u64));
    bool::from(same_bytes & same_len)
}

/// A password from an environment variable or a file (trailing newline ignored): exactly one
/// of the two must be given.
pub(super) fn read_password(
    password_env: Option<&str>,
    password_file: Option<&str>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<String, String> {
    match (password_env, password_file) {
        (Some(var), None) => {
            env(var).ok_or_else(|| format!("environment variable {var} is not set"))
        }
        (None, Some(file)) => std::fs::read_to_string(file)
            .map(|text| text.trim_end_matches(['\n', '\r']).to_string())
            .map_err(|e| format!("cannot read password file {file}: {e}")),
        _ => Err("set exactly one of password_env and password_file".to_string()),
    }
}

/// Validates `[proxy.auth]`, reading each password.
pub fn validate(
    file: &FileAuth,
    env: &dyn Fn(&str) -> Option<String>,
    problems: &mut Vec<Problem>,
) -> Option<AuthConfig> {
    if file.users.is_empty() {
        problem(problems, "proxy.auth.users", "must list at least one user");
    }
    let mut users = Vec::with_capacity(file.users.len());
    for (i, user) in file.users.iter().enumerate() {
        let path = format!("proxy.auth.users[{i}]");
        if user.name.is_empty() {
            problem(problems, format!("{path}.name"), "must not be empty");
        }
        if users
            .iter()
            .any(|(name, _): &(String, Secret)| *name == user.name)
        {
            problem(
                problems,
                format!("{path}.name"),
                format!("duplicate user \"{}\"", user.name),
            );
        }
        let password = read_password(
            user.password_env.as_deref(),
            user.password_file.as_deref(),
            env,
        );
        match password {
            Ok(p) if p.is_empty() => problem(problems, &path, "the password is empty"),
            Ok(p) if p.len() > MAX_PASSWORD => problem(
                problems,
                &path,
                format!("passwords longer than {MAX_PASSWORD} bytes are not supported"),
            ),
            Ok(p) => users.push((user.name.clone(), Secret::new(p))),
            Err(message) => problem(problems, &path, message),
        }
    }
    Some(AuthConfig { users })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> AuthConfig {
        AuthConfig {
            users: vec![
                ("default".to_string(), Secret::new("s3cret".to_string())),
                ("app".to_string(), Secret::new("apppass".to_string())),
            ],
        }
    }

    #[test]
    fn only_the_right_user_and_password_pass() {
        let auth = config();
        assert!(auth.check(b"default", b"s3cret"));
        assert!(auth.check(b"app", b"apppass"));
        assert!(!auth.check(b"app", b"s3cret"));
        assert!(!auth.check(b"default", b"s3cre"));
        assert!(!auth.check(b"default", b"s3cret\0"));
        assert!(!auth.check(b"nobody", b"s3cret"));
        assert!(!auth.check(b"default", &[b'x'; 2000]));
    }

    #[test]
    fn passwords_come_from_the_environment_or_a_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("pw");
        std::fs::write(&file, "from-file\n").expect("write");
        let spec = FileAuth {
            users: vec![
                FileUser {
                    name: "default".into(),
                    password_env: Some("PW".into()),
                    password_file: None,
                },
                FileUser {
                    name: "app".into(),
                    password_env: None,
                    password_file: Some(file.display().to_string()),
                },
                FileUser {
                    name: "bad".into(),
                    password_env: Some("MISSING".into()),
                    password_file: None,
                },
            ],
        };
        let mut problems = Vec::new();
        let env = |name: &str| (name == "PW").then(|| "from-env".to_string());
        let auth = validate(&spec, &env, &mut problems).expect("config");
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(
            problems[0].to_string(),
            "proxy.auth.users[2]: environment variable MISSING is not set"
        );
        assert!(auth.check(b"default", b"from-env"));
        assert!(auth.check(b"app", b"from-file"));
    }
}

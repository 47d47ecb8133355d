//! API keys and roles.
//!
//! Keys live in a JSON file as SHA-256 hashes, never in plain text (a key is 32 random
//! bytes, so a plain hash is enough: there is nothing to guess). Clients send
//! `authorization: Bearer <key>` as gRPC metadata or an HTTP header. Roles:
//! - `admin`: everything;
//! - `brand`: add, delete and get entries of its listed brands only; match across all;
//! - `matcher`: match only.
//!
//! Without a key file every call is allowed, and the server only listens on loopback.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::error::ApiError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything.
    Admin,
    /// Add, delete and read entries of its listed brands; match across all brands.
    Brand,
    /// Match only.
    Matcher,
}

/// One key as stored in the key file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyRecord {
    /// Who holds the key (shown in logs and the audit log).
    pub name: String,
    /// SHA-256 of the key, 64 hex digits.
    pub sha256: String,
    pub role: Role,
    /// Brands a `brand` key may write and read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub brands: Vec<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct KeyFile {
    pub keys: Vec<KeyRecord>,
}

impl KeyFile {
    pub fn load(path: &Path) -> Result<KeyFile> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading key file {}", path.display()))?;
        let file: KeyFile =
            serde_json::from_str(&text).with_context(|| format!("key file {} is not valid", path.display()))?;
        for k in &file.keys {
            if k.sha256.len() != 64 || !k.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                bail!("key file {}: key {:?} has a bad sha256 (64 hex digits expected)", path.display(), k.name);
            }
            if k.role == Role::Brand && k.brands.is_empty() {
                bail!("key file {}: brand key {:?} lists no brands", path.display(), k.name);
            }
        }
        Ok(file)
    }

    /// Write the file atomically, readable by its owner only.
    pub fn store(&self, path: &Path) -> Result<()> {
        let tmp = path.with_extension("tmp");
        let text = serde_json::to_string_pretty(self)? + "\n";
        {
            use std::io::Write;
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create(true).truncate(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut f = options.open(&tmp).with_context(|| format!("writing {}", tmp.display()))?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))?;
        Ok(())
    }

    /// Make a new random key, add its hash; returns the key (shown once, never stored).
    pub fn add(&mut self, name: &str, role: Role, brands: Vec<String>) -> Result<String> {
        if self.keys.iter().any(|k| k.name == name) {
            bail!("a key named {name:?} exists already");
        }
        if role == Role::Brand && brands.is_empty() {
            bail!("a brand key needs at least one --brand");
        }
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).map_err(|e| anyhow::anyhow!("no randomness from the system: {e}"))?;
        let key = format!("lk_{}", hex(&secret));
        self.keys.push(KeyRecord {
            name: name.into(),
            sha256: hex(&crate::hash::sha256(key.as_bytes())),
            role,
            brands,
        });
        Ok(key)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Who is calling.
#[derive(Debug, Clone)]
pub struct Principal {
    pub name: String,
    pub role: Role,
    pub brands: Vec<String>,
}

impl Principal {
    /// Anyone, when no keys are configured (loopback only).
    pub fn local() -> Principal {
        Principal { name: "local".into(), role: Role::Admin, brands: Vec::new() }
    }

    fn denied(&self, what: &str) -> ApiError {
        ApiError::PermissionDenied(format!("key {:?} ({:?}) may not {what}", self.name, self.role))
    }

    /// Add, delete or read entries of `brand`.
    pub fn may_manage(&self, brand: &str) -> Result<(), ApiError> {
        match self.role {
            Role::Admin => Ok(()),
            Role::Brand if self.brands.iter().any(|b| b == brand) => Ok(()),
            _ => Err(self.denied(&format!("manage entries of brand {brand:?}"))),
        }
    }

    /// Write at all (before looking at brands).
    pub fn may_write(&self) -> Result<(), ApiError> {
        match self.role {
            Role::Admin | Role::Brand => Ok(()),
            Role::Matcher => Err(self.denied("add or delete entries")),
        }
    }

    /// Everything else (whole-index statistics, browsing every brand).
    pub fn must_be_admin(&self, what: &str) -> Result<(), ApiError> {
        match self.role {
            Role::Admin => Ok(()),
            _ => Err(self.denied(what)),
        }
    }
}

/// The configured keys, or none.
#[derive(Debug, Default)]
pub struct Auth {
    keys: Option<HashMap<String, KeyRecord>>,
}

impl Auth {
    /// No keys: every call is allowed.
    pub fn open() -> Auth {
        Auth { keys: None }
    }

    pub fn from_file(path: &Path) -> Result<Auth> {
        let file = KeyFile::load(path)?;
        if file.keys.is_empty() {
            bail!("key file {} has no keys (add one with `lookalike keys add`)", path.display());
        }
        Ok(Auth { keys: Some(file.keys.into_iter().map(|k| (k.sha256.to_ascii_lowercase(), k)).collect()) })
    }

    /// Whether keys are required.
    pub fn is_enforced(&self) -> bool {
        self.keys.is_some()
    }

    /// The caller, from the value of its `authorization` header.
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<Principal, ApiError> {
        let Some(keys) = &self.keys else { return Ok(Principal::local()) };
        let Some(value) = authorization else {
            return Err(ApiError::Unauthenticated("an API key is required: send `authorization: Bearer <key>`".into()));
        };
        let key = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .ok_or_else(|| ApiError::Unauthenticated("the authorization header must be `Bearer <key>`".into()))?
            .trim();
        match keys.get(&hex(&crate::hash::sha256(key.as_bytes()))) {
            Some(k) => Ok(Principal { name: k.name.clone(), role: k.role, brands: k.brands.clone() }),
            None => Err(ApiError::Unauthenticated("unknown API key".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_roles_and_brands() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.json");
        let mut file = KeyFile::default();
        let admin = file.add("ops", Role::Admin, vec![]).unwrap();
        let acme = file.add("acme", Role::Brand, vec!["acme".into()]).unwrap();
        let pipeline = file.add("pipeline", Role::Matcher, vec![]).unwrap();
        assert!(file.add("acme", Role::Admin, vec![]).is_err());
        assert!(file.add("nobrand", Role::Brand, vec![]).is_err());
        file.store(&path).unwrap();
        let stored = std::fs::read_to_string(&path).unwrap();
        for key in [&admin, &acme, &pipeline] {
            assert!(!stored.contains(key.as_str()), "a key is stored in plain text");
        }
        let auth = Auth::from_file(&path).unwrap();
        let who = |k: &str| auth.authenticate(Some(&format!("Bearer {k}")));
        assert_eq!(who(&admin).unwrap().role, Role::Admin);
        let brand = who(&acme).unwrap();
        assert!(brand.may_manage("acme").is_ok());
        assert!(matches!(brand.may_manage("globex"), Err(ApiError::PermissionDenied(_))));
        assert!(brand.must_be_admin("see stats").is_err());
        let matcher = who(&pipeline).unwrap();
        assert!(matcher.may_write().is_err());
        assert!(matches!(who("lk_wrong"), Err(ApiError::Unauthenticated(_))));
        assert!(matches!(auth.authenticate(None), Err(ApiError::Unauthenticated(_))));
        assert!(matches!(auth.authenticate(Some(&admin)), Err(ApiError::Unauthenticated(_))));
        assert_eq!(Auth::open().authenticate(None).unwrap().role, Role::Admin);
    }
}

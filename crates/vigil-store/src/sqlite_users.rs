//! SQL of users, sessions and API token metadata for the SQLite backend.

use crate::StoreError;
use crate::sqlite::SqliteStore;
use crate::users::{
    LockoutPolicy, NewSession, SessionInfo, TokenInfo, UserAccount, UserStore, token_id,
    validate_name, validate_role,
};
use async_trait::async_trait;
use rusqlite::{OptionalExtension, Row, params};
use vigil_model::Timestamp;

pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS app_user(name TEXT PRIMARY KEY, role TEXT NOT NULL, password_hash TEXT, disabled INTEGER NOT NULL DEFAULT 0, failed INTEGER NOT NULL DEFAULT 0, locked_until INTEGER, lockouts INTEGER NOT NULL DEFAULT 0, created INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS user_session(id INTEGER PRIMARY KEY, hash BLOB NOT NULL UNIQUE, user TEXT NOT NULL, csrf_hash BLOB NOT NULL, created INTEGER NOT NULL, last_seen INTEGER NOT NULL, expires INTEGER NOT NULL, revoked INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS user_session_user ON user_session(user);
";

/// Sessions are kept this long past their absolute expiry (for audit), then deleted.
const SESSION_KEEP_MS: i64 = 7 * 86_400_000;
/// Longest lock period, however often an account was locked.
const MAX_LOCK_MS: i64 = 86_400_000;

const USER_COLS: &str =
    "name, role, password_hash, disabled, failed, locked_until, lockouts, created";

fn user_row(r: &Row<'_>) -> Result<UserAccount, rusqlite::Error> {
    Ok(UserAccount {
        name: r.get(0)?,
        role: r.get(1)?,
        password_hash: r.get(2)?,
        disabled: r.get(3)?,
        failed_attempts: r.get(4)?,
        locked_until: r.get::<_, Option<i64>>(5)?.map(Timestamp),
        lockouts: r.get(6)?,
        created: Timestamp(r.get(7)?),
    })
}

/// The digest prefix a public token id names.
fn token_prefix(id: &str) -> Result<Vec<u8>, StoreError> {
    let not_found = || StoreError::NotFound(format!("token {id}"));
    let hex = id.strip_prefix("tok_").ok_or_else(not_found)?;
    if hex.len() != 16 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(not_found());
    }
    (0..8)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| not_found()))
        .collect()
}

#[async_trait]
impl UserStore for SqliteStore {
    async fn create_user(&self, u: UserAccount) -> Result<(), StoreError> {
        validate_name(&u.name)?;
        validate_role(&u.role)?;
        self.blocking(move |inner| {
            inner.write(|tx, _| {
                let n = tx.execute(
                    "INSERT OR IGNORE INTO app_user(name, role, password_hash, disabled, failed, locked_until, lockouts, created) VALUES (?1, ?2, ?3, ?4, 0, NULL, 0, ?5)",
                    params![u.name, u.role, u.password_hash, u.disabled, u.created.0],
                )?;
                if n == 0 {
                    return Err(StoreError::Conflict(format!("user {} exists", u.name)));
                }
                Ok(())
            })
        })
        .await
    }

    async fn user(&self, name: &str) -> Result<Option<UserAccount>, StoreError> {
        let name = name.to_owned();
        self.blocking(move |inner| {
            inner.read(|c| {
                c.prepare_cached(&format!("SELECT {USER_COLS} FROM app_user WHERE name = ?1"))?
                    .query_row([name], user_row)
                    .optional()
                    .map_err(Into::into)
            })
        })
        .await
    }

    async fn upsert_external_user(
        &self,
        name: &str,
        role: &str,
        now: Timestamp,
    ) -> Result<UserAccount, StoreError> {
        validate_name(name)?;
        validate_role(role)?;
        let (name, role) = (name.to_owned(), role.to_owned());
        self.blocking(move |inner| {
            inner.write(|tx, _| {
                tx.execute(
                    "INSERT INTO app_user(name, role, created) VALUES (?1, ?2, ?3) ON CONFLICT(name) DO UPDATE SET role = excluded.role",
                    params![name, role, now.0],
                )?;
                tx.query_row(
                    &format!("SELECT {USER_COLS} FROM app_user WHERE name = ?1"),
                    [&name],
                    user_row,
                )
                .map_err(Into::into)
            })
        })
        .await
    }

    async fn users(&self) -> Result<Vec<UserAccount>, StoreError> {
        self.blocking(move |inner| {
            inner.read(|c| {
                let mut s =
                    c.prepare_cached(&format!("SELECT {USER_COLS} FROM app_user ORDER BY name"))?;
                let rows = s.query_map([], user_row)?;
                rows.collect::<Result<Vec<_>, _>>().map_err(Into::into)
            })
        })
        .await
    }

    async fn set_user_disabled(&self, name: &str, disabled: bool) -> Result<(), StoreError> {
        let name = name.to_owned();
        self.blocking(move |inner| {
            inner.write(|tx, _| {
                let n = tx.execute(
                    "UPDATE app_user SET disabled = ?2 WHERE name = ?1",
                    params![name, disabled],
                )?;
                if n == 0 {
                    return Err(StoreError::NotFound(format!("user {name}")));
                }
                if disabled {
                    tx.execute(
                        "UPDATE user_session SET revoked = 1 WHERE user = ?1",
                        [&name],
                    )?;
                    tx.execute("UPDATE api_token SET revoked = 1 WHERE name = ?1", [&name])?;
                }
                Ok(())
            })
        })
        .await
    }

    async fn login_failed(
        &self,
        name: &str,
        now: Timestamp,
        policy: LockoutPolicy,
    ) -> Result<Option<Timestamp>, StoreError> {
        let name = name.to_owned();
        self.blocking(move |inner| {
            inner.write(|tx, _| {
                let row: Option<(u32, u32)> = tx
                    .query_row(
                        "SELECT failed, lockouts FROM app_user WHERE name = ?1",
                        [&name],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .optional()?;
                let Some((failed, lockouts)) = row else {
                    return Ok(None);
                };
                let failed = failed.saturating_add(1);
                if failed < policy.max_failures.max(1) {
                    tx.execute(
                        "UPDATE app_user SET failed = ?2 WHERE name = ?1",
                        params![name, failed],
                    )?;
                    return Ok(None);
                }
                let factor = 1i64 << lockouts.min(20);
                let lock_ms = policy.lock_ms.max(0).saturating_mul(factor).min(MAX_LOCK_MS);
                let until = now.saturating_add_millis(lock_ms);
                tx.execute(
                    "UPDATE app_user SET failed = 0, lockouts = lockouts + 1, locked_until = ?2 WHERE name = ?1",
                    params![name, until.0],
                )?;
                Ok(Some(until))
            })
        })
        .await
    }

    async fn login_succeeded(&self, name: &str) -> Result<(), StoreError> {
        let name = name.to_owned();
        self.blocking(move |inner| {
            inner.write(|tx, _| {
                tx.execute(
                    "UPDATE app_user SET failed = 0, lockouts = 0, locked_until = NULL WHERE name = ?1 AND (failed != 0 OR lockouts != 0 OR locked_until IS NOT NULL)",
                    [&name],
                )?;
                Ok(())
            })
        })
        .await
    }

    async fn create_session(&self, s: NewSession) -> Result<i64, StoreError> {
        self.blocking(move |inner| {
            inner.write(|tx, _| {
                tx.execute(
                    "DELETE FROM user_session WHERE expires < ?1",
                    [s.created.0.saturating_sub(SESSION_KEEP_MS)],
                )?;
                tx.execute(
                    "INSERT INTO user_session(hash, user, csrf_hash, created, last_seen, expires) VALUES (?1, ?2, ?3, ?4, ?4, ?5)",
                    params![s.id_hash, s.user, s.csrf_hash, s.created.0, s.expires.0],
                )?;
                Ok(tx.last_insert_rowid())
            })
        })
        .await
    }

    async fn session(&self, id_hash: &[u8]) -> Result<Option<SessionInfo>, StoreError> {
        let hash = id_hash.to_vec();
        self.blocking(move |inner| {
            inner.read(|c| {
                c.prepare_cached(
                    "SELECT s.id, s.user, u.role, u.disabled, s.csrf_hash, s.created, s.last_seen, s.expires, s.revoked \
                     FROM user_session s JOIN app_user u ON u.name = s.user WHERE s.hash = ?1",
                )?
                .query_row([hash], |r| {
                    Ok(SessionInfo {
                        id: r.get(0)?,
                        user: r.get(1)?,
                        role: r.get(2)?,
                        user_disabled: r.get(3)?,
                        csrf_hash: r.get(4)?,
                        created: Timestamp(r.get(5)?),
                        last_seen: Timestamp(r.get(6)?),
                        expires: Timestamp(r.get(7)?),
                        revoked: r.get(8)?,
                    })
                })
                .optional()
                .map_err(Into::into)
            })
        })
        .await
    }

    async fn touch_session(&self, id: i64, now: Timestamp) -> Result<(), StoreError> {
        self.blocking(move |inner| {
            inner.write(|tx, _| {
                tx.execute(
                    "UPDATE user_session SET last_seen = max(last_seen, ?2) WHERE id = ?1",
                    params![id, now.0],
                )?;
                Ok(())
            })
        })
        .await
    }

    async fn revoke_session(&self, id_hash: &[u8]) -> Result<bool, StoreError> {
        let hash = id_hash.to_vec();
        self.blocking(move |inner| {
            inner.write(|tx, _| {
                let n = tx.execute(
                    "UPDATE user_session SET revoked = 1 WHERE hash = ?1 AND revoked = 0",
                    [hash],
                )?;
                Ok(n > 0)
            })
        })
        .await
    }

    async fn revoke_user_sessions(&self, user: &str) -> Result<u64, StoreError> {
        let user = user.to_owned();
        self.blocking(move |inner| {
            inner.write(|tx, _| {
                let n = tx.execute(
                    "UPDATE user_session SET revoked = 1 WHERE user = ?1 AND revoked = 0",
                    [user],
                )?;
                Ok(n as u64)
            })
        })
        .await
    }

    async fn api_tokens(&self) -> Result<Vec<TokenInfo>, StoreError> {
        self.blocking(move |inner| {
            inner.read(|c| {
                let mut s = c.prepare_cached(
                    "SELECT hash, name, role, created, expires, revoked FROM api_token ORDER BY created DESC, name",
                )?;
                let rows = s.query_map([], |r| {
                    Ok(TokenInfo {
                        id: token_id(&r.get::<_, Vec<u8>>(0)?),
                        name: r.get(1)?,
                        role: r.get(2)?,
                        created: Timestamp(r.get(3)?),
                        expires: r.get::<_, Option<i64>>(4)?.map(Timestamp),
                        revoked: r.get(5)?,
                    })
                })?;
                rows.collect::<Result<Vec<_>, _>>().map_err(Into::into)
            })
        })
        .await
    }

    async fn revoke_api_token(&self, id: &str) -> Result<(), StoreError> {
        let prefix = token_prefix(id)?;
        let id = id.to_owned();
        self.blocking(move |inner| {
            inner.write(|tx, _| {
                let n = tx.execute(
                    "UPDATE api_token SET revoked = 1 WHERE substr(hash, 1, 8) = ?1",
                    [prefix],
                )?;
                if n == 0 {
                    return Err(StoreError::NotFound(format!("token {id}")));
                }
                Ok(())
            })
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(name: &str) -> UserAccount {
        UserAccount {
            name: name.into(),
            role: "nurse".into(),
            password_hash: Some("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into()),
            disabled: false,
            failed_attempts: 0,
            locked_until: None,
            lockouts: 0,
            created: Timestamp(1_000),
        }
    }

    #[tokio::test]
    async fn lockout_doubles_and_success_clears_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = SqliteStore::open(dir.path().join("u.db")).expect("open");
        s.create_user(account("ann")).await.expect("create");
        assert!(matches!(
            s.create_user(account("ann")).await,
            Err(StoreError::Conflict(_))
        ));
        let p = LockoutPolicy {
            max_failures: 3,
            lock_ms: 1_000,
        };
        let now = Timestamp(10_000);
        assert_eq!(s.login_failed("ann", now, p).await.expect("f1"), None);
        assert_eq!(s.login_failed("ann", now, p).await.expect("f2"), None);
        assert_eq!(
            s.login_failed("ann", now, p).await.expect("f3"),
            Some(Timestamp(11_000))
        );
        for _ in 0..2 {
            assert_eq!(s.login_failed("ann", now, p).await.expect("again"), None);
        }
        assert_eq!(
            s.login_failed("ann", now, p).await.expect("second lock"),
            Some(Timestamp(12_000))
        );
        s.login_succeeded("ann").await.expect("ok");
        let u = s.user("ann").await.expect("read").expect("exists");
        assert_eq!(
            (u.failed_attempts, u.lockouts, u.locked_until),
            (0, 0, None)
        );
        assert_eq!(
            s.login_failed("nobody", now, p).await.expect("unknown"),
            None
        );
    }

    #[tokio::test]
    async fn disabling_revokes_sessions_and_tokens() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = SqliteStore::open(dir.path().join("u.db")).expect("open");
        s.create_user(account("bob")).await.expect("create");
        s.create_session(NewSession {
            id_hash: vec![1; 32],
            csrf_hash: vec![2; 32],
            user: "bob".into(),
            created: Timestamp::now(),
            expires: Timestamp::now().saturating_add_millis(60_000),
        })
        .await
        .expect("session");
        crate::Store::create_api_token(
            &s,
            &[7; 32],
            crate::ApiToken {
                name: "bob".into(),
                role: "nurse".into(),
                created: Timestamp::now(),
                expires: None,
                revoked: false,
            },
        )
        .await
        .expect("token");
        let tokens = s.api_tokens().await.expect("list");
        assert_eq!(tokens[0].id, "tok_0707070707070707");
        s.set_user_disabled("bob", true).await.expect("disable");
        let sess = s.session(&[1; 32]).await.expect("read").expect("exists");
        assert!(sess.revoked && sess.user_disabled);
        assert!(s.api_tokens().await.expect("list")[0].revoked);
        assert!(matches!(
            s.revoke_api_token("tok_0000000000000000").await,
            Err(StoreError::NotFound(_))
        ));
        assert!(matches!(
            s.set_user_disabled("nobody", true).await,
            Err(StoreError::NotFound(_))
        ));
    }
}

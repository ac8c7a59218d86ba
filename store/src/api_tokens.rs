//! Personal API tokens: `aie_` + 32 random bytes in hex. Only the SHA-256 is stored, so a copy
//! of the database holds no usable token; a revoked token stops working on its next request.

use sha2::{Digest, Sha256};
use sqlx::FromRow;

use super::{now_ms, Db};
use aiedge_core::views::UserView;
use aiedge_core::views::{NewToken, TokenView};

pub const TOKEN_PREFIX: &str = "aie_";
/// A token's last use is written at most this often, so API traffic is not a stream of writes.
const LAST_USED_RESOLUTION_MS: i64 = 60_000;

fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.trim().as_bytes()))
}

#[derive(FromRow)]
struct TokenRow {
    id: String,
    name: String,
    prefix: String,
    created_at: i64,
    last_used_at: Option<i64>,
    revoked_at: Option<i64>,
    expires_at: Option<i64>,
}

impl From<TokenRow> for TokenView {
    fn from(r: TokenRow) -> Self {
        TokenView {
            id: r.id,
            name: r.name,
            prefix: r.prefix,
            created_at_ms: r.created_at,
            last_used_at_ms: r.last_used_at,
            revoked_at_ms: r.revoked_at,
            expires_at_ms: r.expires_at,
        }
    }
}

/// A new token for `user_id`, valid for `lifetime` (`None`: until revoked). The secret is in the
/// answer and nowhere else.
pub async fn create(db: &Db, user_id: &str, name: &str, lifetime: Option<std::time::Duration>) -> Result<NewToken, sqlx::Error> {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    let secret = format!("{TOKEN_PREFIX}{}", hex::encode(bytes));
    let token = TokenView {
        id: uuid::Uuid::new_v4().to_string(),
        name: name.to_string(),
        prefix: secret.chars().take(TOKEN_PREFIX.len() + 6).collect(),
        created_at_ms: now_ms(),
        last_used_at_ms: None,
        revoked_at_ms: None,
        expires_at_ms: None,
    };
    let token = TokenView {
        expires_at_ms: lifetime.map(|l| token.created_at_ms.saturating_add(i64::try_from(l.as_millis()).unwrap_or(i64::MAX))),
        ..token
    };
    sqlx::query(
        "insert into api_tokens (id, user_id, name, token_hash, prefix, created_at, expires_at) values ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&token.id)
    .bind(user_id)
    .bind(&token.name)
    .bind(hash(&secret))
    .bind(&token.prefix)
    .bind(token.created_at_ms)
    .bind(token.expires_at_ms)
    .execute(&db.writer)
    .await?;
    Ok(NewToken { token, secret })
}

pub async fn list(db: &Db, user_id: &str) -> Result<Vec<TokenView>, sqlx::Error> {
    let rows: Vec<TokenRow> = sqlx::query_as(
        "select id, name, prefix, created_at, last_used_at, revoked_at, expires_at from api_tokens where user_id = $1
         order by created_at desc, id",
    )
    .bind(user_id)
    .fetch_all(&db.pool)
    .await?;
    Ok(rows.into_iter().map(Into::into).collect())
}

/// Revokes one of the user's tokens. False when they have no such live token.
pub async fn revoke(db: &Db, user_id: &str, id: &str) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("update api_tokens set revoked_at = $1 where id = $2 and user_id = $3 and revoked_at is null")
        .bind(now_ms())
        .bind(id)
        .bind(user_id)
        .execute(&db.writer)
        .await?;
    Ok(done.rows_affected() > 0)
}

/// A live token and its user, read together.
#[derive(FromRow)]
struct TokenUser {
    token_id: String,
    last_used_at: Option<i64>,
    id: String,
    email: String,
    name: String,
    role: String,
    created_at: i64,
}

/// The user a live token belongs to (none for a revoked or expired token, or a disabled account).
pub async fn authenticate(db: &Db, token: &str) -> Result<Option<UserView>, sqlx::Error> {
    if !token.starts_with(TOKEN_PREFIX) || token.len() > 128 {
        return Ok(None);
    }
    let row: Option<TokenUser> = sqlx::query_as(
        "select t.id as token_id, t.last_used_at, u.id, u.email, u.name, u.role, u.created_at
         from api_tokens t join users u on u.id = t.user_id
         where t.token_hash = $1 and t.revoked_at is null and u.disabled_at is null
               and (t.expires_at is null or t.expires_at > $2)",
    )
    .bind(hash(token))
    .bind(now_ms())
    .fetch_optional(&db.pool)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let now = now_ms();
    if row.last_used_at.is_none_or(|t| now - t > LAST_USED_RESOLUTION_MS) {
        sqlx::query("update api_tokens set last_used_at = $1 where id = $2").bind(now).bind(&row.token_id).execute(&db.writer).await?;
    }
    Ok(Some(UserView {
        id: row.id,
        email: row.email,
        name: row.name,
        role: aiedge_core::Role::parse(&row.role).unwrap_or(aiedge_core::Role::User),
        created_at_ms: row.created_at,
        disabled: false,
    }))
}

-- Accounts and server-side sessions.
-- Written in the SQL that SQLite and PostgreSQL share, so one migration set serves both:
-- ids are text (random, never sequential), times are unix milliseconds in bigint.

create table users (
    id            text primary key,
    email         text not null unique,
    name          text not null,
    password_hash text not null,
    role          text not null default 'user' check (role in ('user', 'admin')),
    created_at    bigint not null
);

-- One row per browser session. The id column holds the SHA-256 of the cookie's session id,
-- so a copy of the database does not hand out live sessions.
-- user_id mirrors the id inside data, so all of a user's sessions can be ended at once.
create table sessions (
    id         text primary key,
    user_id    text references users (id) on delete cascade,
    data       text not null,
    expires_at bigint not null
);

create index sessions_expires_at on sessions (expires_at);
create index sessions_user_id on sessions (user_id);

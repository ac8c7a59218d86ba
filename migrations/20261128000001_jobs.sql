-- Applications (ONNX models and script bundles), jobs, their timelines, and personal API tokens.
-- Same conventions as before: text ids, unix-millisecond bigints, SQL both engines share.

create table applications (
    id                 text primary key,
    owner_id           text not null references users (id) on delete cascade,
    name               text not null,
    -- onnx | script
    kind               text not null check (kind in ('onnx', 'script')),
    artifact_key       text not null,
    sha256             text not null,
    size_bytes         bigint not null,
    -- JSON: the model's inputs/outputs (onnx) or the manifest (script)
    details            text not null,
    -- The runtime a node must offer (script bundles), e.g. python3; null for ONNX models.
    runtime            text,
    -- ONNX models: the number of feature columns an input CSV must have.
    features           bigint,
    default_input_key  text,
    default_input_rows bigint,
    created_at         bigint not null,
    -- Deleted applications disappear from lists and take no new jobs; past jobs keep their page.
    deleted_at         bigint
);
-- Names are unique among a user's live applications.
create unique index applications_owner_name on applications (owner_id, name) where deleted_at is null;

create table jobs (
    id            text primary key,
    owner_id      text not null references users (id) on delete cascade,
    app_id        text not null references applications (id),
    -- queued | dispatched | running | succeeded | failed | cancelled
    status        text not null,
    input_key     text not null,
    input_name    text not null,
    input_rows    bigint,
    node_id       text references nodes (id) on delete set null,
    -- Dispatches so far; the current attempt's number. Messages and reports carry it.
    attempt       integer not null default 0,
    -- JSON: every candidate's score when the balancer chose, and why the winner won.
    decision      text,
    error         text,
    result_key    text,
    result_rows   bigint,
    log_key       text,
    progress_rows bigint,
    created_at    bigint not null,
    dispatched_at bigint,
    started_at    bigint,
    finished_at   bigint
);
create index jobs_owner_created on jobs (owner_id, created_at);
create index jobs_status on jobs (status);
create index jobs_node_status on jobs (node_id, status);

-- The job's timeline: one row per status change.
create table job_events (
    id      text primary key,
    job_id  text not null references jobs (id) on delete cascade,
    at      bigint not null,
    status  text not null,
    attempt integer not null,
    node_id text,
    message text not null
);
create index job_events_job_at on job_events (job_id, at);

-- Personal API tokens. Only the SHA-256 is kept; the prefix helps a person tell them apart.
create table api_tokens (
    id           text primary key,
    user_id      text not null references users (id) on delete cascade,
    name         text not null,
    token_hash   text not null unique,
    prefix       text not null,
    created_at   bigint not null,
    last_used_at bigint,
    revoked_at   bigint
);
create index api_tokens_user on api_tokens (user_id);

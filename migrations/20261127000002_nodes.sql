-- Nodes: machines that owners enrol, their one-time registration tokens, their status
-- transitions, and a bounded history of their metrics.

create table nodes (
    id                text primary key,
    owner_id          text not null references users (id) on delete cascade,
    name              text not null,
    -- waiting (no agent yet), active, dead
    status            text not null default 'waiting',
    -- enabled, disabled, draining, removed (removal revokes the node's credentials)
    admin_state       text not null default 'enabled',
    facts             text,
    metrics           text,
    score             double precision,
    last_heartbeat_at bigint,
    created_at        bigint not null,
    unique (owner_id, name)
);

-- Only the SHA-256 of a token is kept; the token itself is shown once.
create table node_tokens (
    token_hash text primary key,
    node_id    text not null references nodes (id) on delete cascade,
    expires_at bigint not null,
    used_at    bigint
);

create table node_events (
    id          text primary key,
    node_id     text not null references nodes (id) on delete cascade,
    at          bigint not null,
    from_status text not null,
    to_status   text not null,
    reason      text not null
);
create index node_events_node_at on node_events (node_id, at);

create table node_samples (
    node_id        text not null references nodes (id) on delete cascade,
    at             bigint not null,
    free_cpu_pct   double precision not null,
    free_mem_pct   double precision not null,
    free_ram_gib   double precision not null,
    events_per_sec double precision not null,
    temperature_c  double precision,
    score          double precision not null
);
create index node_samples_node_at on node_samples (node_id, at);

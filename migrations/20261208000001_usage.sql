-- Usage analytics for the admins' Usage page (see aiedge_core::usage). Nothing here is parsed
-- from logs: servers count requests in memory and add them into minute rows every few seconds;
-- the housekeeping moves whole minutes older than two hours into hour rows in one transaction
-- (a request is counted once), adds the jobs that ended since its mark, and samples the active
-- nodes once a minute. Minute rows live two hours at most; the rest is pruned after a year.

-- Requests per minute by functionality, channel (web | api) and route, counted per latency
-- bucket (`le_ms`: the bucket's upper bound, -1 above the last).
create table usage_minutes (
    minute   bigint not null,
    action   text   not null,
    channel  text   not null,
    method   text   not null,
    route    text   not null,
    le_ms    bigint not null,
    requests bigint not null,
    -- Of those, answered 4xx and 5xx.
    refused  bigint not null,
    failed   bigint not null,
    primary key (minute, action, channel, method, route, le_ms)
);

create table usage_hours (
    hour     bigint not null,
    action   text   not null,
    channel  text   not null,
    method   text   not null,
    route    text   not null,
    le_ms    bigint not null,
    requests bigint not null,
    refused  bigint not null,
    failed   bigint not null,
    primary key (hour, action, channel, method, route, le_ms)
);

-- The accounts that made requests, per hour: distinct users per step are counted from here.
create table usage_users (
    hour     bigint not null,
    user_id  text   not null,
    requests bigint not null,
    primary key (hour, user_id)
);

-- Jobs that ended per hour, by outcome and node, counted per bucket of their queue wait
-- (`measure` = 'wait': created to last dispatch; `le_ms` 0 for a job never dispatched) and run
-- time ('run': started to finished). Every ended job has one 'wait' row: outcomes count those.
create table usage_jobs (
    hour    bigint not null,
    outcome text   not null,
    -- '' for jobs that never reached a node (cancelled while queued).
    node_id text   not null,
    measure text   not null check (measure in ('wait', 'run')),
    le_ms   bigint not null,
    jobs    bigint not null,
    primary key (hour, outcome, node_id, measure, le_ms)
);

-- Minutes each node was active, per hour, with its owner then (node-hours per owner).
create table usage_nodes (
    hour     bigint not null,
    node_id  text   not null,
    owner_id text   not null,
    minutes  bigint not null,
    primary key (hour, node_id)
);

-- How far each roll-up has gone ('jobs': finished_at counted up to; 'nodes': last minute sampled).
create table usage_marks (
    name text primary key,
    upto bigint not null
);

-- The jobs roll-up reads jobs by the time they ended (so will retention).
create index jobs_finished_at on jobs (finished_at);

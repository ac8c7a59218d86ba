-- Schedules: jobs that run by themselves. A schedule names one of its owner's applications, an
-- input (the application's default input at fire time, or a CSV stored with the schedule) and
-- its fire times: a cron expression read in an IANA zone, or one single instant.
create table schedules (
    id           text primary key,
    owner_id     text not null references users (id) on delete cascade,
    app_id       text not null references applications (id),
    name         text not null,
    -- A cron expression (5 fields, or 6 with seconds first); null for a single run at once_at.
    cron         text,
    once_at      bigint,
    time_zone    text not null,
    overlap      text not null check (overlap in ('skip', 'allow', 'replace')),
    -- A fire time still runs if at most this late (one catch-up run after a gap).
    deadline_ms  bigint not null,
    pool         text not null check (pool in ('shared', 'own')),
    -- Null: the application's default input, looked up at each fire time.
    input_key    text,
    input_name   text not null,
    input_rows   bigint,
    paused_at    bigint,
    -- The next fire time; null once there is none (a single run that fired).
    next_fire_at bigint,
    -- The job of the latest fired run (for the overlap policy).
    last_job_id  text,
    created_at   bigint not null,
    updated_at   bigint not null,
    check ((cron is null) <> (once_at is null))
);
create unique index schedules_owner_name on schedules (owner_id, name);
-- The ticker's question: which active schedules are due?
create index schedules_due on schedules (next_fire_at, id) where paused_at is null and next_fire_at is not null;

-- What became of each fire time. The primary key is what makes a fire time run at most once:
-- the job is submitted in the transaction that inserts its 'fired' row and advances the
-- schedule's next_fire_at, so a tick run twice (a retry, two replicas) cannot submit it twice.
create table schedule_runs (
    schedule_id text not null references schedules (id) on delete cascade,
    fire_at     bigint not null,
    outcome     text not null check (outcome in ('fired', 'skipped', 'missed')),
    job_id      text references jobs (id) on delete set null,
    -- Missed rows stand for a gap: this many fire times from fire_at on.
    count       bigint not null default 1,
    note        text not null,
    recorded_at bigint not null,
    primary key (schedule_id, fire_at)
);
create index schedule_runs_job on schedule_runs (job_id);

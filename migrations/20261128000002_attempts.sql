-- Failures: every dispatch of a job is an attempt with its own row, so a job page can list them
-- and the balancer can avoid the nodes a job already failed on. Agents report a per-process
-- instance id, so a restarted agent's lost attempts are found without waiting for a timeout.

create table job_attempts (
    job_id         text not null references jobs (id) on delete cascade,
    attempt        integer not null,
    node_id        text references nodes (id) on delete set null,
    -- Kept so the history reads well after the node is gone.
    node_name      text not null,
    -- The agent process that started it (see nodes.agent_instance).
    agent_instance text,
    dispatched_at  bigint not null,
    started_at     bigint,
    finished_at    bigint,
    -- dispatched | running | succeeded | failed | lost | cancelled
    outcome        text not null,
    reason         text,
    primary key (job_id, attempt)
);
create index job_attempts_node_finished on job_attempts (node_id, finished_at);

-- How many attempts a job gets before it fails for good (--max-attempts when it was submitted).
alter table jobs add column max_attempts integer not null default 3;

-- The agent process heartbeating for the node now; a change means the agent restarted.
alter table nodes add column agent_instance text;

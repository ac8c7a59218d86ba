-- Pools: a node runs its owner's jobs, and other users' only when its owner shares it (with
-- everyone, or with the users named in node_shares). Nodes that existed before are private too:
-- their owners share them on the node page (an operator's shared machines: `server node share`).
alter table nodes add column sharing text not null default 'private'
    check (sharing in ('private', 'everyone', 'users'));

create table node_shares (
    node_id text not null references nodes (id) on delete cascade,
    user_id text not null references users (id) on delete cascade,
    primary key (node_id, user_id)
);
create index node_shares_user on node_shares (user_id);

-- Which nodes a job may use: 'shared' (its owner's and those shared with its owner) or 'own'.
alter table jobs add column pool text not null default 'shared' check (pool in ('shared', 'own'));

-- How often nodes gave the job back unstarted (no free slot in time). The first few are free;
-- after that each one counts as an attempt, so a job cannot bounce between nodes for ever.
alter table jobs add column returns integer not null default 0;

-- The balancer reads every node's recent attempts (succeeded against failed or lost).
create index job_attempts_finished on job_attempts (finished_at);

-- Bounded node history: full-rate samples (`node_samples`) for the last hour, then one row per
-- node per minute here, kept for a week. The server moves whole minutes from one table to the
-- other in one transaction (`app::backend::nodes::roll_up`), so a sample is counted once.

create table node_samples_minute (
    node_id             text not null references nodes (id) on delete cascade,
    -- Start of the minute, in ms since the epoch (a multiple of 60 000).
    minute              bigint not null,
    -- Samples averaged into this row; weights the merge of a late sample and the charts.
    samples             bigint not null,
    -- Averages over the minute.
    free_cpu_pct        double precision not null,
    free_mem_pct        double precision not null,
    free_ram_gib        double precision not null,
    events_per_sec      double precision not null,
    score               double precision not null,
    -- Average of the samples that had a temperature (null when none had), and how many did.
    temperature_c       double precision,
    temperature_samples bigint not null,
    primary key (node_id, minute)
);
-- The retention prune deletes by age across all nodes.
create index node_samples_minute_minute on node_samples_minute (minute);

-- The roll-up picks the samples older than an hour across all nodes.
create index node_samples_at on node_samples (at);

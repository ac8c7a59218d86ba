-- Storage used per account, as last measured by the lease holder (files in the artifact store
-- and artifacts kept in the database), for the admin page. `owner_id` '' is what belongs to no
-- account: orphans the sweep has not removed yet, and uploads in progress.
create table storage_usage (
    owner_id    text primary key,
    bytes       bigint not null,
    objects     bigint not null,
    jobs        bigint not null,
    measured_at bigint not null
);

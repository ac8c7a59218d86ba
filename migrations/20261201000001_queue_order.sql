-- The dispatcher reads the queue a page at a time, oldest first. With only an index on status,
-- every page sorted the whole queue (and read every queued job's inline input) before taking
-- 64: with a backlog of thousands that cost more than dispatching. Walking (status, created_at,
-- id) in order reads just the page. It also serves every lookup by status alone, so the old
-- index goes (one index fewer to update on each status change).
create index jobs_status_created on jobs (status, created_at, id);
drop index jobs_status;

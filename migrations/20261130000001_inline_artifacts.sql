-- Small artifacts (job inputs and results of at most 64 KiB, most interactive jobs) live in the
-- database instead of the artifact store: written in the same transaction as the job row that
-- refers to them, they cost no file create, fsync, rename and delete, and a later object store
-- would not pay a request per tiny result. Their keys start with `inline:`.
create table inline_artifacts (
    key        text primary key,
    content    text not null,
    created_at bigint not null
);

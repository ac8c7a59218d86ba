//! Group commit: writes that arrive together go to the database in one transaction.
//!
//! On SQLite every write takes its turn on one connection, with a round trip to that
//! connection's thread per statement, so under load the writer's time goes to `begin`, `commit`
//! and the hand-offs between threads rather than to the rows. A [`GroupCommit`] queue takes
//! every request waiting (up to [`GroupWrite::MAX_GROUP`]) and writes them together, with
//! multi-row statements where the kind of write allows. A lone request costs what it did
//! alone. When a group fails, each of its requests is written again on its own, so one bad
//! request fails alone and the others still get through.

use std::future::Future;

use super::db::Db;

/// A kind of write that can be done for many requests in one transaction.
pub trait GroupWrite: Send + Sync + Sized + 'static {
    /// What each request gets back.
    type Output: Send + 'static;
    /// Requests written together, at most.
    const MAX_GROUP: usize;
    /// Writes `group` in one transaction; one output per request, in order.
    fn write(db: &Db, group: &[Self]) -> impl Future<Output = Result<Vec<Self::Output>, sqlx::Error>> + Send;
}

type Request<W> = (W, tokio::sync::oneshot::Sender<Result<<W as GroupWrite>::Output, sqlx::Error>>);

/// The queue of one kind of write; cheap to clone.
pub struct GroupCommit<W: GroupWrite>(tokio::sync::mpsc::Sender<Request<W>>);

impl<W: GroupWrite> Clone for GroupCommit<W> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<W: GroupWrite> GroupCommit<W> {
    /// Starts the writing task (on the database thread, see [`Db::spawn`]); it ends when the
    /// last clone of the queue is dropped.
    pub fn start(db: &Db) -> Self {
        let (sender, mut requests) = tokio::sync::mpsc::channel::<Request<W>>(1024);
        let writer = db.clone();
        db.spawn(async move {
            let mut group: Vec<Request<W>> = Vec::with_capacity(W::MAX_GROUP);
            while requests.recv_many(&mut group, W::MAX_GROUP).await > 0 {
                let (writes, replies): (Vec<W>, Vec<_>) = group.drain(..).unzip();
                match W::write(&writer, &writes).await {
                    Ok(outputs) => {
                        for (reply, output) in replies.into_iter().zip(outputs) {
                            let _ = reply.send(Ok(output));
                        }
                    }
                    Err(e) if writes.len() == 1 => {
                        if let Some(reply) = replies.into_iter().next() {
                            let _ = reply.send(Err(e));
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, requests = writes.len(), kind = std::any::type_name::<W>(), "a group write failed; writing its requests one by one");
                        for (write, reply) in writes.into_iter().zip(replies) {
                            let one = W::write(&writer, std::slice::from_ref(&write)).await;
                            let _ = reply.send(one.and_then(|mut out| out.pop().ok_or(sqlx::Error::RowNotFound)));
                        }
                    }
                }
            }
        });
        Self(sender)
    }

    /// Queues a request and waits for its outcome.
    pub async fn write(&self, request: W) -> Result<W::Output, sqlx::Error> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let gone = || sqlx::Error::Io(std::io::Error::other("the database writer has stopped"));
        self.0.send((request, reply)).await.map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}

/// `head` followed by `rows` tuples of `columns` numbered placeholders: `($1, $2), ($3, $4)`.
pub(crate) fn values(head: &str, rows: usize, columns: usize) -> String {
    values_from(head, rows, columns, 1)
}

/// [`values`] with the placeholders numbered from `first`, after the statement's own.
pub(crate) fn values_from(head: &str, rows: usize, columns: usize, first: usize) -> String {
    let tuples: Vec<String> = (0..rows)
        .map(|r| {
            let cells: Vec<String> = (0..columns).map(|c| format!("${}", first + r * columns + c)).collect();
            format!("({})", cells.join(", "))
        })
        .collect();
    format!("{head} {}", tuples.join(", "))
}

#[cfg(test)]
mod tests {
    #[test]
    fn placeholders_are_numbered_across_rows() {
        assert_eq!(super::values("insert into t (a, b) values", 2, 2), "insert into t (a, b) values ($1, $2), ($3, $4)");
        assert_eq!(super::values("insert into t (a) values", 1, 1), "insert into t (a) values ($1)");
        assert_eq!(super::values_from("values", 2, 1, 3), "values ($3), ($4)");
    }
}

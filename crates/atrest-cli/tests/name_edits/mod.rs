//! The edits a writer of the catalog (no key) can make to the table that
//! maps tenant names to tenants, for the tests that try each of them: every
//! single edit of each row's name, tenant and tag to each value seen in its
//! column or a fresh one (a NULL tag too), each deletion, and every ordered
//! pair of them (which swaps names, ids or tags between two tenants).

#![allow(dead_code)]

use std::path::Path;

use atrest_test_support::sqlite::types::Value;
use atrest_test_support::sqlite::{Connection, params};

/// One edit of the names table.
#[derive(Clone, Debug)]
enum Edit {
    Set {
        row: String,
        column: &'static str,
        value: Value,
    },
    Delete(String),
}

impl Edit {
    /// Applies it; `false` if the database refused it (a unique key).
    fn apply(&self, db: &Connection) -> bool {
        const ROW: &str = "(SELECT rowid FROM names_at_start WHERE name = ?)";
        match self {
            Self::Set { row, column, value } => db
                .execute(
                    &format!("UPDATE catalog_tenants SET {column} = ?1 WHERE rowid = {ROW}"),
                    params![value, row],
                )
                .is_ok(),
            Self::Delete(row) => db
                .execute(
                    &format!("DELETE FROM catalog_tenants WHERE rowid = {ROW}"),
                    [row],
                )
                .is_ok(),
        }
    }
}

/// The names table of a catalog, its rows as they were, and the edits.
pub struct NameEdits {
    db: Connection,
    edits: Vec<Edit>,
}

impl NameEdits {
    /// The edits of the rows of the catalog at `catalog` as they are now.
    pub fn of(catalog: &Path) -> Self {
        let db = Connection::open(catalog).unwrap();
        db.busy_timeout(std::time::Duration::from_secs(10)).unwrap();
        db.execute_batch(
            "CREATE TEMP TABLE names_at_start AS SELECT rowid, * FROM catalog_tenants",
        )
        .unwrap();
        let column = |name: &str| -> Vec<Value> {
            let mut statement = db
                .prepare(&format!("SELECT DISTINCT {name} FROM catalog_tenants"))
                .unwrap();
            statement
                .query_map([], |row| row.get::<_, Value>(0))
                .unwrap()
                .map(Result::unwrap)
                .collect()
        };
        let rows: Vec<String> = db
            .prepare("SELECT name FROM names_at_start ORDER BY name")
            .unwrap()
            .query_map([], |row| row.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let mut edits = Vec::new();
        for row in rows {
            for name in ["name", "tenant", "tag"] {
                let mut values = column(name);
                values.push(match name {
                    "name" => Value::Text("northwind".into()),
                    "tenant" => Value::Blob(vec![0x5a; 16]),
                    _ => Value::Blob(vec![0x5a; 32]),
                });
                if name == "tag" {
                    values.push(Value::Null);
                }
                for value in values {
                    edits.push(Edit::Set {
                        row: row.clone(),
                        column: name,
                        value,
                    });
                }
            }
            edits.push(Edit::Delete(row));
        }
        Self { db, edits }
    }

    /// Puts the rows back as they were.
    pub fn restore(&self) {
        self.db
            .execute_batch(
                "DELETE FROM catalog_tenants;
                 INSERT INTO catalog_tenants (rowid, name, tenant, tag)
                     SELECT rowid, name, tenant, tag FROM names_at_start;",
            )
            .unwrap();
    }

    /// Runs `check` with each edit and each ordered pair of edits the
    /// database takes applied (the rows restored before each), with a
    /// label saying which; then restores the rows. Returns how many cases
    /// were checked.
    pub fn each(&self, mut check: impl FnMut(&str)) -> usize {
        let mut cases = 0;
        for (i, first) in self.edits.iter().enumerate() {
            for second in std::iter::once(None).chain(self.edits.iter().skip(i + 1).map(Some)) {
                self.restore();
                if !first.apply(&self.db) || second.is_some_and(|second| !second.apply(&self.db)) {
                    continue;
                }
                cases += 1;
                check(&format!("{first:?} then {second:?}"));
            }
        }
        self.restore();
        cases
    }
}

"""The database every service shares (Postgres): the tables (`schema`), the alembic migrations
(`migrations/`, applied by `lexora migrate`), and the engines and pools services open on it
(`engine`). Each service reads and writes only the tables it owns."""

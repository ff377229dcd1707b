"""The job store on PostgreSQL, shared by several bot processes: the pool and its transactions, the migrations, the store."""

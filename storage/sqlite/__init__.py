"""The job store on one SQLite file: the connection and its transactions, the migrations, the rows, the store."""

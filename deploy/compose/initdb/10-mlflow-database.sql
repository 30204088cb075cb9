-- MLflow keeps its own Alembic history: it gets a database of its own (as in the chart).
CREATE DATABASE mlflow OWNER fleet;

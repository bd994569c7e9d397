-- Runs once, when the postgres service initialises its volume (docker-entrypoint-initdb.d):
-- the MLflow tracking server's backend store, next to Dagster's database.
CREATE DATABASE mlflow;

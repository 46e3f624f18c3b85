"""Plain functions the DAGs call (pull, version, validate, train, gate, deploy): no Airflow imports here,
so they run and test without a scheduler."""

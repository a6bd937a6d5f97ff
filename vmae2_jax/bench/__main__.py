"""`python -m vmae2_jax.bench [data] ...`: train-step benchmark, or the data one."""

import sys


def main(argv=None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  if argv and argv[0] == "data":
    from vmae2_jax.bench import data_bench  # imported lazily: its own dependencies
    return data_bench.main(argv)
  from vmae2_jax.bench import train_bench
  return train_bench.main(argv)


if __name__ == "__main__":
  sys.exit(main())

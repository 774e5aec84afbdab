"""`vllm bench throughput` without vLLM's serving stack: the same benchmark module, parser and main.

vLLM 0.26's CLI entry (`vllm.entrypoints.cli.main`) imports the OpenAI server first (uvicorn,
watchfiles, ...), which an offline wheel set for `LLM.generate` does not carry; seen on the H200:
`ModuleNotFoundError: No module named 'uvicorn'`, then 'watchfiles'. The benchmark itself lives in
`vllm.benchmarks.throughput` (`add_cli_args`, `main`): this runs exactly that.
"""
import sys

from vllm.benchmarks.throughput import add_cli_args, main
from vllm.utils.argparse_utils import FlexibleArgumentParser

if __name__ == "__main__":
    parser = FlexibleArgumentParser(description=__doc__.splitlines()[0])
    add_cli_args(parser)
    main(parser.parse_args(sys.argv[1:]))

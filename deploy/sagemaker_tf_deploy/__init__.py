"""The `deploy` command: package a model, put it on a SageMaker endpoint, run it locally.

Four layers, each importing only the ones below it (tests/unit/test_imports.py keeps it so, with
no circles and no private name taken from another module):

commands/    argument parsing and what the user sees, one module per subcommand or family
  main.py        the parser every subcommand registers on; main() maps outcomes to exit codes
  common.py      the AWS session from flags, request bodies, printing an answer, argument types
  endpoint.py    package, create, update, invoke, autoscale, delete, wait, list, status
  local.py       `deploy local`
  compare.py     `deploy compare`, `deploy local --fpmath-check`
  migrate.py     `deploy migrate/promote/rollback`
  transform.py   `deploy transform` (a SageMaker job, or --local)
  multimodel.py  `deploy models`, create/local --multi-model, invoke --target-model/--local

operations/  the steps on AWS
  endpoint.py    create / update / delete / list: the order of the steps and the interruption
                 rule (what a stop or a failure undoes); the steps are the next five modules
  resources.py   names (BASE-TIMESTAMP), the created-by tag, describe(), and what deploy made for
                 an endpoint (owned_leftovers/owned_archives, for delete)
  staging.py     model data to S3: local checks, packaging a folder, bucket, upload
  waiting.py     SageMaker's endpoint statuses: wait until settled, delete when SageMaker allows;
                 the poll interval is always the caller's (--poll; small in the tests)
  cleanup.py     what one run created (Created) and its rollback, newest first; abort_uploads
  scaling.py     autoscale, and auto scaling suspended/restored around an update
  invoke.py      invoke_endpoint and --softmax
  transform.py   a SageMaker batch transform job (model, job, wait, clean-up)
  transform_cost.py  the cost line: instance-hours, cost per million records, batch's estimate
  transform_async.py  `deploy transform --engine async` on AWS: async endpoint scaled 0..N,
                 the loop, clean-up, the interruption rule
  async_io.py    its plumbing: S3 input/output, requests staged and invoked, answers collected
  async_endpoint.py  asynchronous endpoints: their config, backlog scaling, invoke and wait for answers
  migrate.py     x86 endpoint to Graviton through variants; promote, rollback
  compare.py     an endpoint's variants as comparison targets
  multimodel.py  multi-model endpoints: the S3 prefix, create --multi-model, models add/list,
                 invoke with TargetModel (on AWS or against local/multimodel.py's proxy)

local/       the image on this machine, run with the docker CLI the way SageMaker runs it
  container.py   `deploy local`: docker run, the model mount, emulation, /ping, stop
  transform.py   `deploy transform --local`: SageMaker's batch agent against the image here, by
                 either engine (--engine batch: HTTP; async: async_runtime.py)
  records.py     a transform's records and requests: split types, mini-batches, answers, joins
  agent.py       the transform loop both engines run: requests in flight, retries, halving to
                 the failing records, `<file>.out` in order, progress
  async_runtime.py  an async endpoint's runtime played here (a folder for S3)
  fpmath.py      `deploy local --fpmath-check`: the image twice, BF16 against STRICT
  multimodel.py  `deploy local --multi-model`: the container and a proxy playing SageMaker's part

core/        what every layer above shares (no SageMaker orchestration)
  errors.py      DeployError / UsageError and the exit-code table
  output.py      --output json|table|text, the progress Console, closed pipes
  interrupts.py  SIGINT/SIGTERM/SIGHUP, --on-interrupt rollback|keep, shielded cleanup
  aws.py         boto3 session and clients (flags, environment, profile, AWS_ENDPOINT_URL)
  archive.py     model.tar.gz layout, packaging and safe unpacking
  checks.py      the checks that need no network, run before any AWS call (exit 2)
  instance.py    which CPU architecture a SageMaker instance type has
  registry.py    which CPU architectures an image reference offers
  defaults.py    the variant name and the environment every model gets (default_env)
  bodies.py      content types by file extension; an answer as data
  comparison.py  requests to two targets: latency and agreement of the answers (no NumPy)
  target_models.py  a multi-model TargetModel and the name the container knows it by

endpoint.py was once one module with about eight reasons to change; it is split by what changes
together: a SageMaker status rule touches waiting.py only; a new default variable defaults.py
only; a new upload rule staging.py only. create/update/delete stay together in endpoint.py
because they share the interruption rule and its messages, which change as one.
"""

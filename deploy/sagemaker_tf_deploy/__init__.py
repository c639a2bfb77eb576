"""The `deploy` command: package a model, put it on a SageMaker endpoint, run it locally.

Four layers, each importing only the ones below it (commands -> operations -> local -> core);
modules, each with one reason to change:
- commands/main.py   argument parsing and what the user sees
- core/archive.py    model.tar.gz layout, packaging and safe unpacking
- core/aws.py        boto3 session and clients (flags, environment, profile, AWS_ENDPOINT_URL)
- operations/registry.py  which CPU architectures an image reference offers
- core/instance.py   which CPU architecture a SageMaker instance type has
- operations/endpoint.py  create / update / delete / list: the order of the steps and the interruption
               rule (what a stop or a failure undoes); the steps are the next five modules
- operations/resources.py names (BASE-TIMESTAMP), the created-by tag, the environment every model gets
               (default_env, also used by local, transform, migrate, multimodel), describe(),
               and what deploy made for an endpoint (owned_leftovers/owned_archives, for delete)
- operations/staging.py   model data to S3: local checks, packaging a folder, bucket, upload, abort
- operations/waiting.py   SageMaker's endpoint statuses: wait until settled, delete when SageMaker allows;
               the poll interval is always the caller's (--poll; small in the tests)
- operations/cleanup.py   what one run created (Created) and its rollback, newest first
- operations/scaling.py   autoscale, and auto scaling suspended/restored around an update
- operations/invoke.py    invoke_endpoint and --softmax
- core/checks.py     the checks that need no network, run before any AWS call (exit 2)
- core/interrupts.py  SIGINT/SIGTERM/SIGHUP, --on-interrupt rollback|keep, shielded cleanup
- core/output.py     --output json|table|text, the progress Console, closed pipes
- core/errors.py     DeployError / UsageError and the exit-code table
- local/container.py run the image the way SageMaker does, with the docker CLI
- operations/transform.py `deploy transform`: a SageMaker batch transform job (model, job, wait, clean-up)
- local/transform.py  `deploy transform --local`: SageMaker's batch agent against the image here, by
               either engine (--engine batch: HTTP; async: async_runtime.py)
- local/records.py    a transform's records and requests: split types, mini-batches, answers, joins
- local/agent.py      the transform loop both engines run: requests in flight, retries, halving to
               the failing records, `<file>.out` in order, progress
- local/async_runtime.py  an async endpoint's runtime played here (a folder for S3)
- operations/transform_cost.py  the cost line: instance-hours, cost per million records, batch's estimate
- operations/transform_async.py  `deploy transform --engine async` on AWS: async endpoint scaled 0..N,
               the loop, clean-up, the interruption rule
- operations/async_io.py  its plumbing: S3 input/output, requests staged and invoked, answers collected
- operations/migrate.py   `deploy migrate/promote/rollback`: x86 endpoint to Graviton through variants
- operations/compare.py   `deploy compare`, `deploy local --fpmath-check`: latency and agreement (no NumPy)
- operations/multimodel.py  multi-model endpoints: create --multi-model, `deploy models`, local proxy

endpoint.py was one module with about eight reasons to change (names and environment, waiting,
S3 staging, create, update, autoscale, delete/list, invoke). It is split by what changes together:
a SageMaker status rule touches waiting.py only; a new default variable resources.py only; a new
upload rule staging.py only. create/update/delete stay together in endpoint.py because they
share the interruption rule and its messages, which change as one. local.py takes default_env
from resources.py and no longer imports the AWS orchestration.
"""

"""The `deploy` command: package a model, put it on a SageMaker endpoint, run it locally.

Modules, each with one reason to change:
- cli.py       argument parsing and what the user sees
- archive.py   model.tar.gz layout, packaging and safe unpacking
- aws.py       boto3 session and clients (flags, environment, profile, AWS_ENDPOINT_URL)
- registry.py  which CPU architectures an image reference offers
- instance.py  which CPU architecture a SageMaker instance type has
- endpoint.py  create / wait / update / autoscale / delete, with rollback
- checks.py    the checks that need no network, run before any AWS call (exit 2)
- interrupts.py  SIGINT/SIGTERM/SIGHUP, --on-interrupt rollback|keep, shielded cleanup
- output.py    --output json|table|text, the progress Console, closed pipes
- errors.py    DeployError / UsageError and the exit-code table
- local.py     run the image the way SageMaker does, with the docker CLI
- transform.py `deploy transform`: a SageMaker batch transform job (model, job, wait, clean-up)
- transform_local.py  `deploy transform --local`: SageMaker's batch agent against the image here
"""

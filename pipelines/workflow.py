"""The cluster run as an Argo WorkflowTemplate, defined with Hera (7.x, Argo Workflows v4).

DAG: scan -> convert (fan-out over batches of cases) -> [pseudolabel (GPU fan-out, when asked)] -> split ->
assemble -> preprocess -> train (one GPU pod per fold) -> predict -> evaluate -> report, with an exit handler
that records the run's status. Every step runs ``tsretrain pod`` from one of our images with an explicit
command: it fetches its inputs from the store, runs one ``tsretrain`` subcommand, publishes its outputs.

Values only the Helm chart knows (secret name, images, GPU node selector and tolerations) are written as
``__TOKENS__`` that the chart replaces when it installs this file.

Render: ``python pipelines/workflow.py > helm/tsretrain/files/workflowtemplate.yaml`` (``make workflow``).
"""

from __future__ import annotations

import sys

from hera.workflows import (
    DAG,
    Container,
    EmptyDirVolume,
    Env,
    ExistingVolume,
    Parameter,
    Resources,
    RetryStrategy,
    SecretEnv,
    WorkflowTemplate,
)
from hera.workflows.models import ValueFrom

NAME = "tsretrain"
DATASET = "Dataset{{workflow.parameters.dataset-id}}_{{workflow.parameters.dataset-name}}"
OUT = "{{workflow.parameters.output-prefix}}"
WORK = "/work"
NNUNET = f"{WORK}/nnunet"
SECRET = "__S3_SECRET__"

PARAMETERS = {
    "input-prefix": ("s3://tsretrain/input/dicom", "store URI of the DICOM tree (any layout)"),
    "output-prefix": ("s3://tsretrain/runs/run-1", "store URI under which every stage publishes"),
    "s3-endpoint": ("__S3_ENDPOINT__", "S3 endpoint URL (empty for AWS)"),
    "dictionary": ("radcure-oar21", "organ dictionary (shipped name or mounted YAML path)"),
    "pseudolabel": ("false", "run TotalSegmentator pseudo-labels (true for radcure-ts90)"),
    "folds": ('["0", "1", "2", "3", "4"]', "JSON list of folds, one GPU pod each"),
    "trainer": ("nnUNetTrainerTsr", "nnU-Net trainer"),
    "planner": ("default", "default, resenc-m or resenc-l"),
    "configuration": ("3d_fullres", "nnU-Net configuration"),
    "epochs": ("1000", "training epochs"),
    "dataset-id": ("366", "nnU-Net dataset id"),
    "dataset-name": ("TotalSegmentator", "nnU-Net dataset name"),
    "convert-batch-size": ("8", "cases per conversion pod"),
    "cpu-image": ("__CPU_IMAGE__", "image of the CPU steps"),
    "gpu-image": ("__GPU_IMAGE__", "image of the GPU steps"),
    "pseudolabel-image": ("__PSEUDOLABEL_IMAGE__", "image of the pseudo-label step"),
    "gpu-pod-spec-patch": ("__GPU_POD_SPEC_PATCH__", "JSON pod spec patch of GPU pods (node selector, tolerations)"),
}


def _env() -> list[Env | SecretEnv]:
    return [
        Env(name="AWS_ENDPOINT_URL", value="{{workflow.parameters.s3-endpoint}}"),
        SecretEnv(name="AWS_ACCESS_KEY_ID", secret_name=SECRET, secret_key="access-key"),
        SecretEnv(name="AWS_SECRET_ACCESS_KEY", secret_name=SECRET, secret_key="secret-key"),
        Env(name="PYTHONUNBUFFERED", value="1"),
    ]


def _volumes(shm: bool, weights: bool) -> list[EmptyDirVolume | ExistingVolume]:
    volumes: list[EmptyDirVolume | ExistingVolume] = [EmptyDirVolume(name="work", mount_path=WORK)]
    if shm:  # nnU-Net's worker processes share batches through /dev/shm (64 MiB by default in a container)
        volumes.append(EmptyDirVolume(name="dshm", mount_path="/dev/shm", medium="Memory"))
    if weights:  # TotalSegmentator weights, provisioned once (README: TotalSegmentator weights)
        volumes.append(
            ExistingVolume(name="weights", claim_name="__WEIGHTS_CLAIM__", mount_path="/weights", read_only=True)
        )
    return volumes


def _step(
    name: str,
    image: str,
    args: list[str],
    resources: Resources,
    *,
    inputs: list[Parameter] | None = None,
    outputs: list[Parameter] | None = None,
    retries: int = 1,
    gpu: bool = False,
) -> Container:
    return Container(
        name=name,
        image="{{workflow.parameters." + image + "}}",
        image_pull_policy="IfNotPresent",
        command=["tsretrain"],
        args=args,
        env=_env(),
        volumes=_volumes(shm=gpu or name == "preprocess", weights=name == "pseudolabel"),
        resources=resources,
        inputs=inputs or [],
        outputs=outputs or [],
        retry_strategy=RetryStrategy(
            limit=retries, retry_policy="Always", backoff={"duration": "30s", "factor": 2, "maxDuration": "30m"}
        ),
        pod_spec_patch="{{workflow.parameters.gpu-pod-spec-patch}}" if gpu else None,
    )


def _pod(
    gets: list[tuple[str, str]],
    puts: list[tuple[str, str]],
    command: list[str],
    raw: list[tuple[str, str]] | None = None,
    manifest: str | None = None,
) -> list[str]:
    args = ["pod"]
    for uri, path in raw or []:
        args += ["--get-raw", f"{uri}={path}"]
    for uri, path in gets:
        args += ["--get", f"{uri}={path}"]
    for path, uri in puts:
        args += ["--put", f"{path}={uri}"]
    if manifest:
        args += ["--manifest-name", manifest]
    return [*args, "--", *command]


def build() -> WorkflowTemplate:
    """The WorkflowTemplate."""
    cpu = Resources(cpu_request=2, cpu_limit=4, memory_request="8Gi", memory_limit="16Gi")
    big_cpu = Resources(cpu_request=8, cpu_limit=16, memory_request="32Gi", memory_limit="64Gi")
    gpu = Resources(cpu_request=8, cpu_limit=12, memory_request="32Gi", memory_limit="48Gi", gpus=1)
    raw = f"{NNUNET}/nnUNet_raw/{DATASET}"
    pre = f"{NNUNET}/nnUNet_preprocessed/{DATASET}"
    results = f"{NNUNET}/nnUNet_results/{DATASET}"
    model = "{{workflow.parameters.trainer}}__nnUNetPlans__{{workflow.parameters.configuration}}"
    with WorkflowTemplate(
        name=NAME,
        entrypoint="pipeline",
        on_exit="record-status",
        service_account_name="__SERVICE_ACCOUNT__",
        parallelism=16,
        arguments=[Parameter(name=k, value=v, description=d) for k, (v, d) in PARAMETERS.items()],
        labels={"app.kubernetes.io/name": NAME},
    ) as template:
        scan = _step(
            "scan",
            "cpu-image",
            _pod(
                [],
                [(f"{WORK}/scan", f"{OUT}/scan")],
                [
                    "scan",
                    "{{workflow.parameters.input-prefix}}",  # headers only, by ranged reads from the store
                    "--out",
                    f"{WORK}/scan",
                    "--dictionary",
                    "{{workflow.parameters.dictionary}}",
                    "--batches-out",
                    "/tmp/batches.json",
                    "--batch-size",
                    "{{workflow.parameters.convert-batch-size}}",
                ],
            ),
            cpu,
            outputs=[Parameter(name="batches", value_from=ValueFrom(path="/tmp/batches.json"))],
            retries=2,
        )
        batch = [Parameter(name="cases")]
        convert = _step(
            "convert",
            "cpu-image",
            _pod(
                [(f"{OUT}/scan", f"{WORK}/scan")],
                [(f"{WORK}/converted/cases", f"{OUT}/converted/cases")],
                [
                    "convert",
                    f"{WORK}/dicom",
                    "--out",
                    f"{WORK}/converted",
                    "--inventory",
                    f"{WORK}/scan/inventory.json",
                    "--dictionary",
                    "{{workflow.parameters.dictionary}}",
                    "--cases",
                    "{{inputs.parameters.cases}}",
                    "--source",
                    "{{workflow.parameters.input-prefix}}",
                ],
                manifest="_manifest-{{pod.name}}.json",
            ),
            cpu,
            inputs=batch,
            retries=3,
        )
        pseudo = _step(
            "pseudolabel",
            "pseudolabel-image",
            _pod(
                [(f"{OUT}/converted/cases", f"{WORK}/converted/cases")],
                [(f"{WORK}/pseudolabels", f"{OUT}/pseudolabels")],
                [
                    "pseudolabel",
                    f"{WORK}/converted",
                    "--out",
                    f"{WORK}/pseudolabels",
                    "--dictionary",
                    "{{workflow.parameters.dictionary}}",
                    "--cases",
                    "{{inputs.parameters.cases}}",
                    "--weights",
                    "/weights",
                ],
                manifest="_manifest-{{pod.name}}.json",
            ),
            gpu,
            inputs=batch,
            retries=2,
            gpu=True,
        )
        split = _step(
            "split",
            "cpu-image",
            _pod(
                [(f"{OUT}/converted/cases", f"{WORK}/converted/cases")],
                [(f"{WORK}/split", f"{OUT}/split")],
                ["split", f"{WORK}/converted", "--out", f"{WORK}/split"],
            ),
            cpu,
        )
        assemble_args = [
            "assemble",
            f"{WORK}/converted",
            "--split",
            f"{WORK}/split",
            "--out",
            f"{NNUNET}/nnUNet_raw",
            "--dataset-id",
            "{{workflow.parameters.dataset-id}}",
            "--dataset-name",
            "{{workflow.parameters.dataset-name}}",
            "--dictionary",
            "{{workflow.parameters.dictionary}}",
        ]
        assemble_gets = [(f"{OUT}/converted/cases", f"{WORK}/converted/cases"), (f"{OUT}/split", f"{WORK}/split")]
        assemble = _step("assemble", "cpu-image", _pod(assemble_gets, [(raw, f"{OUT}/nnunet/raw")], assemble_args), cpu)
        # With pseudo-labels the label maps come from the merge of manual and TotalSegmentator sources.
        assemble_merged = _step(
            "assemble-merged",
            "cpu-image",
            _pod(
                [*assemble_gets, (f"{OUT}/pseudolabels", f"{WORK}/pseudolabels")],
                [(raw, f"{OUT}/nnunet/raw")],
                [*assemble_args, "--labels-from", f"{WORK}/pseudolabels"],
            ),
            cpu,
        )
        preprocess = _step(
            "preprocess",
            "cpu-image",
            _pod(
                [(f"{OUT}/nnunet/raw", raw), (f"{OUT}/split", f"{WORK}/split")],
                [(pre, f"{OUT}/nnunet/preprocessed")],
                [
                    "preprocess",
                    "--work",
                    NNUNET,
                    "--split",
                    f"{WORK}/split",
                    "--planner",
                    "{{workflow.parameters.planner}}",
                    "--dataset-id",
                    "{{workflow.parameters.dataset-id}}",
                    "--dataset-name",
                    "{{workflow.parameters.dataset-name}}",
                ],
            ),
            big_cpu,
            retries=2,
        )
        train = _step(
            "train",
            "gpu-image",
            _pod(
                [(f"{OUT}/nnunet/preprocessed", pre)],
                [],
                [
                    "train",
                    "--work",
                    NNUNET,
                    "--fold",
                    "{{inputs.parameters.fold}}",
                    "--trainer",
                    "{{workflow.parameters.trainer}}",
                    "--configuration",
                    "{{workflow.parameters.configuration}}",
                    "--epochs",
                    "{{workflow.parameters.epochs}}",
                    "--dataset-id",
                    "{{workflow.parameters.dataset-id}}",
                    "--dataset-name",
                    "{{workflow.parameters.dataset-name}}",
                    "--store",
                    f"{OUT}/nnunet/results/{model}",
                ],
            ),
            gpu,
            inputs=[Parameter(name="fold")],
            retries=5,
            gpu=True,
        )
        predict = _step(
            "predict",
            "gpu-image",
            _pod(
                [
                    (f"{OUT}/nnunet/raw", raw),
                    (f"{OUT}/nnunet/preprocessed", pre),
                    (f"{OUT}/nnunet/results/{model}", f"{results}/{model}"),
                ],
                [(f"{WORK}/predictions", f"{OUT}/predictions")],
                [
                    "predict",
                    "--work",
                    NNUNET,
                    "--out",
                    f"{WORK}/predictions",
                    "--trainer",
                    "{{workflow.parameters.trainer}}",
                    "--configuration",
                    "{{workflow.parameters.configuration}}",
                    "--dataset-id",
                    "{{workflow.parameters.dataset-id}}",
                    "--dataset-name",
                    "{{workflow.parameters.dataset-name}}",
                ],
            ),
            gpu,
            retries=2,
            gpu=True,
        )
        evaluate = _step(
            "evaluate",
            "cpu-image",
            _pod(
                [(f"{OUT}/nnunet/raw", raw), (f"{OUT}/predictions", f"{WORK}/predictions")],
                [(f"{WORK}/evaluation", f"{OUT}/evaluation")],
                [
                    "evaluate",
                    f"{raw}/labelsTs",
                    f"{WORK}/predictions/test",
                    "--out",
                    f"{WORK}/evaluation",
                    "--dictionary",
                    "{{workflow.parameters.dictionary}}",
                ],
            ),
            big_cpu,
        )
        run = f"{WORK}/run"
        report = _step(
            "report",
            "cpu-image",
            _pod(
                [
                    (f"{OUT}/scan", f"{run}/scan"),
                    (f"{OUT}/converted/cases", f"{run}/converted/cases"),
                    (f"{OUT}/split", f"{run}/split"),
                    (f"{OUT}/nnunet/raw", f"{run}/nnunet/nnUNet_raw/{DATASET}"),
                    (f"{OUT}/nnunet/preprocessed", f"{run}/nnunet/nnUNet_preprocessed/{DATASET}"),
                    (f"{OUT}/nnunet/results/{model}", f"{run}/nnunet/nnUNet_results/{DATASET}/{model}"),
                    (f"{OUT}/predictions", f"{run}/predictions"),
                    (f"{OUT}/evaluation", f"{run}/evaluation"),
                ],
                [(f"{run}/report", f"{OUT}/report")],
                ["report", "--run-dir", run, "--dataset", DATASET],
            ),
            cpu,
        )
        status = _step(
            "record-status",
            "cpu-image",
            [
                "status",
                "--out",
                OUT,
                "--name",
                "{{workflow.name}}",
                "--status",
                "{{workflow.status}}",
                "--failures",
                "{{workflow.failures}}",
            ],
            Resources(cpu_request=0.1, memory_request="256Mi"),
        )
        assert status is not None
        with DAG(name="pipeline"):
            t_scan = scan(name="scan")
            t_convert = convert(
                name="convert", arguments={"cases": "{{item}}"}, with_param="{{tasks.scan.outputs.parameters.batches}}"
            )
            t_pseudo = pseudo(
                name="pseudolabel",
                arguments={"cases": "{{item}}"},
                with_param="{{tasks.scan.outputs.parameters.batches}}",
                when="{{workflow.parameters.pseudolabel}} == true",
            )
            t_split = split(name="split")
            t_assemble = assemble(name="assemble", when="{{workflow.parameters.pseudolabel}} != true")
            t_assemble_merged = assemble_merged(
                name="assemble-merged", when="{{workflow.parameters.pseudolabel}} == true"
            )
            t_preprocess = preprocess(name="preprocess")
            t_train = train(name="train", arguments={"fold": "{{item}}"}, with_param="{{workflow.parameters.folds}}")
            t_predict = predict(name="predict")
            t_evaluate = evaluate(name="evaluate")
            t_report = report(name="report")
            t_scan >> t_convert >> t_pseudo >> t_split >> [t_assemble, t_assemble_merged] >> t_preprocess >> t_train
            t_train >> t_predict >> t_evaluate >> t_report
    return template


def render() -> str:
    return str(build().to_yaml())


if __name__ == "__main__":
    sys.stdout.write(render())

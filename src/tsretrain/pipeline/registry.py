"""The stage registry: every stage declared once, as a ``Stage`` record (``tsretrain.pipeline.stage``).

A declaration names the stage, its typed configuration, the function that runs it, how each configuration
field appears on the command line (and, for paths, which run location it points at), what the stage reads and
writes in the run layout, what it fans out over, its resource class and image family. From it come the
``tsretrain`` subcommands (``tsretrain.cli``), ``tsretrain run``'s order and configuration
(``tsretrain.pipeline.runner``) and the Argo WorkflowTemplate (``tsretrain.cluster.workflow``).

Adding a stage is one ``Stage(...)`` in ``STAGES``; adding an option is a configuration field plus its
``Option`` here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tsretrain.conversion.convert import ConvertConfig, convert
from tsretrain.conversion.scan import RTSTRUCT_CHOICES, ScanConfig, scan
from tsretrain.dataset.assemble import AssembleConfig, assemble
from tsretrain.dataset.pseudolabel import PseudolabelConfig, pseudolabel
from tsretrain.dataset.split import SplitConfig, run_split
from tsretrain.delivery.infer import FORMATS, InferConfig, infer
from tsretrain.delivery.package import ExportConfig, export
from tsretrain.errors import UserError
from tsretrain.evaluation.compare import CompareConfig, compare
from tsretrain.evaluation.evaluate import EvaluateConfig, evaluate
from tsretrain.evaluation.report import ReportConfig, report
from tsretrain.layout import LOCATIONS, relative
from tsretrain.pipeline.stage import (
    DICTIONARY,
    INFERENCE,
    INPUT,
    MODEL_OPTIONS,
    RUN,
    TRAINING,
    AnyStage,
    Files,
    Gather,
    Local,
    OnCluster,
    Option,
    Stage,
    Switch,
)
from tsretrain.run_files import (
    BATCH,
    CASE_FILES,
    CASE_LISTING,
    CASE_MANIFEST,
    CONTOURS,
    DECISION,
    EVALUATION_SUMMARY,
    INFERENCE_LISTING,
    INFERENCE_RECORD,
    INVENTORY,
    MERGE_RECORD,
    MERGED_LABELS,
    NNUNET_SPLITS,
    PLANNING_SUMMARY,
    PROGRESS,
    REVIEW,
    SPLIT,
    SPLIT_BATCH,
    image_name,
    label_name,
    second_stage_trainer,
)
from tsretrain.stages import StageResult
from tsretrain.synth.cohort import SynthConfig, generate
from tsretrain.synth.layouts import LAYOUTS
from tsretrain.training.batched import BatchConfig, FingerprintConfig, PlanConfig, fingerprint, plan, preprocess_cases
from tsretrain.training.postprocess import SEARCHES, PostprocessConfig, postprocess
from tsretrain.training.predict import PredictConfig, predict
from tsretrain.training.preprocess import PLANNERS, PreprocessConfig, preprocess
from tsretrain.training.second_stage import LOSSES, SecondPredictConfig, SecondStageConfig, second_predict, second_stage
from tsretrain.training.train import TrainConfig, ValidateConfig, train, validate

PSEUDOLABELS = Switch("pseudolabel", False, "run TotalSegmentator pseudo-labels (true for radcure-ts90)")
SECOND_STAGE_SWITCH = Switch(
    "second-stage",
    False,
    "true: a tumour-focused second stage per fold (from the first stage's fold), predicted and compared",
)
PACKAGE = Switch("export", True, "end with the model package (PREFIX/export/): false leaves it out")

CASE, BATCH_ID = "{case}", "{batch}"  # filled in by the pod: a case of its batch, the batch's id
TRAINING_CASE = ("*/dataset.json", f"*/imagesTr/{image_name(CASE)}", f"*/labelsTr/{label_name(CASE)}")  # of a batch
WORKERS = Option("Worker processes (0: one per usable CPU).", flags=("--workers", "-j"))
RTSTRUCT_CHOICE = Option(f"With several RTSTRUCTs: {', '.join(RTSTRUCT_CHOICES)}.")
WORK = Option("nnU-Net work root (nnUNet_raw, nnUNet_preprocessed, nnUNet_results).", at="nnunet")
DEVICE = Option("auto, cuda (fails without a GPU) or cpu.", parameters=("device",))
PRECISION = Option(
    "On a CPU: auto (bfloat16 autocast where the CPU computes it natively, else float32), bf16 or fp32 "
    "(CUDA: nnU-Net's float16 autocast)."
)
CASES = Option("Only these case ids: a,b or repeated (a batch of a fan-out).", flags=("--cases", "--case"))


STORE = Option("Store URI of the run's nnUNet_results: checkpoints mirrored there, resumed from there.")
TTA = Option("Mirroring TTA (none for tsretrain's trainers: they never mirror).", flags=("--tta",))
ITERATIONS = Option("Iterations per epoch of the tiny trainer (default: its own).", parameters=("iterations",))
STEP_SIZE = Option("Sliding-window step (share of the patch).")
# A model's folder below nnUNet_results, for read patterns: ``{trainer}`` is the run's (first-stage) trainer, filled
# in when the workflow is rendered; the plans name is left open (empty means the planner's). The second stage's
# folders (``<trainer>GTVp<loss>__...``) never match the first stage's pattern, so that a first-stage step's inputs
# are the same before and after a second stage wrote its models beside it.
FIRST_STAGE = "*/{trainer}__*"
SECOND_STAGE = f"*/{second_stage_trainer('{trainer}', '*')}__*"


def prediction_reads(model: str) -> tuple[Files, ...]:
    """A batch of test cases and the final checkpoints of every fold of the models matching ``model``."""
    return (
        Files("split", (SPLIT_BATCH.pattern(batch=BATCH_ID),)),
        Files("raw", (f"*/imagesTs/{image_name(CASE)}", "*/dataset.json")),
        Files("preprocessed", (PLANNING_SUMMARY.pattern(),)),
        Files("results", (f"{model}/*.json", f"{model}/fold_*/checkpoint_final.pth")),
    )


PLANNER = Option(f"Planner: {', '.join(PLANNERS)}.", parameters=("planner",))
PLANS_FROM = Option(
    "Pretrained model (model folder, TotalSegmentator task folder or model package) whose plans are transferred: "
    "topology, patch, spacing and CT normalisation.",
    parameters=("init-from",),
)

STAGES: tuple[AnyStage, ...] = (
    Stage(
        "synth",
        SynthConfig,
        generate,
        "Generate a synthetic head-and-neck DICOM-RT cohort with analytic ground truth.",
        {
            "out": Option("Output folder (dicom/, truth/, cohort.json).", argument=True, at="cohort"),
            "cases": Option("Number of regular patients."),
            "seed": Option("Random seed; the same seed gives the same cohort."),
            "edge_cases": Option("Add the broken and unusual patients.", flags=("--edge-cases",)),
            "layout": Option(f"Folder layout: {', '.join(LAYOUTS)}."),
            "rows": Option("Image rows."),
            "columns": Option("Image columns."),
            "slices": Option("Slices per CT."),
            "pixel_spacing": Option("Pixel spacing (mm)."),
            "slice_thickness": Option("Slice spacing (mm)."),
            "scan_centre": Option("Height of the middle slice (mm, superior; eyes at about 80, larynx about -35)."),
        },
        writes=(Files("cohort"),),
        internal=("id_prefix", "roi_variants"),
        workflows=(),
        makes_input=True,
    ),
    Stage(
        "scan",
        ScanConfig,
        scan,
        "Index a DICOM tree by its tags and list every case with its status and reason.",
        {
            "input": Option(
                "Folder of DICOM files in any layout, or a store URI (s3://...): then only headers are fetched.",
                argument=True,
                at=INPUT,
            ),
            "out": Option("Output folder (inventory.json, cases.csv).", flags=("--out", "-o"), at="scan"),
            "dictionary": DICTIONARY,
            "workers": WORKERS,
            "rtstruct_choice": RTSTRUCT_CHOICE,
            "batches_out": Option("Write every case in batches (a JSON list of batch ids), for a fan-out."),
            "batch_size": Option("Cases per batch.", parameters=("convert-batch-size", "infer-batch-size")),
            "max_batches": Option(
                "At most this many batches: larger ones beyond batch-size x max-batches cases.",
                parameters=("max-batches",),
            ),
            "sizes_out": Option(
                "Write each cluster step's disk, memory and deadline (disk-, memory-, deadline-<step>) here."
            ),
            "scratch": Option("Least disk of a batch step (a Kubernetes quantity).", parameters=("scratch",)),
            "data_scratch": Option("Least disk of a whole-dataset step.", parameters=("data-scratch",)),
            "predict_batch_size": Option(
                "Test cases per prediction pod (for its budget).", parameters=("predict-batch-size",)
            ),
        },
        writes=(Files("scan"),),
        whole_dataset=True,  # its header index and inventory grow with the files
        # memory flat in the files (header records in an index on its disk: sizing.SCAN_INDEX_PER_FILE); the CPUs
        # read headers concurrently
        retries=2,
        hours=6,
        workflows=(TRAINING, INFERENCE),
        # ranged header reads of the input prefix; the fan-outs' batches; each step's budget
        on_cluster={"input": OnCluster.INPUT_PREFIX, "batches_out": OnCluster.BATCHES, "sizes_out": OnCluster.SIZES},
    ),
    Stage(
        "convert",
        ConvertConfig,
        convert,
        "Convert each case to an int16 HU CT and a uint8 label map in NIfTI (nnU-Net naming).",
        {
            "input": Option("Folder holding the DICOM files, in any layout.", argument=True, at=INPUT),
            "out": Option("Output folder (cases/, cases.csv).", flags=("--out", "-o"), at="converted"),
            "dictionary": DICTIONARY,
            "workers": WORKERS,
            "force": Option("Redo cases that are already converted.", flags=("--force",)),
            "inventory": Option("Use this scan inventory instead of scanning.", at="scan", below=INVENTORY.name),
            "cases": CASES,
            "rtstruct_choice": RTSTRUCT_CHOICE,
            "source": Option("Store URI of the DICOM tree; the cases' files are staged into INPUT."),
        },
        reads=(Files("scan", (BATCH.pattern(batch=BATCH_ID),)),),  # a fan-out batch's slice of the inventory
        writes=(Files("converted", ("cases/*/*",)),),  # each batch its cases; the listing is gathered after
        fan_out="cases",
        retries=3,
        on_cluster={  # the batch's own inventory; the batch's files staged first
            "input": OnCluster.STAGED_INPUT,
            "source": OnCluster.INPUT_PREFIX,
            "inventory": OnCluster.BATCH_INVENTORY,
        },
        gather=Gather("listing", "converted", CASE_MANIFEST.pattern(), CASE_LISTING.name, "listing"),
    ),
    Stage(
        "pseudolabel",
        PseudolabelConfig,
        pseudolabel,
        "TotalSegmentator pseudo-labels per task, merged with the manual contours into the final label map.",
        {
            "converted": Option("Output folder of convert (same dictionary).", argument=True, at="converted"),
            "out": Option("Output folder (per case: task maps, merged map).", flags=("--out", "-o"), at="pseudolabels"),
            "dictionary": DICTIONARY,
            "device": Option(
                "auto (CUDA when present), cuda (fails at once without a GPU) or cpu.", parameters=("device",)
            ),
            "precision": PRECISION,
            "weights": Option(
                "TotalSegmentator home: a folder or a store URI (staged to local disk); default TOTALSEG_HOME_DIR."
            ),
            "allow_download": Option("Download missing weights.", flags=("--allow-download",)),
            "prefer_manual": Option(
                "Manual contours before pseudo-labels.", flags=("--prefer-manual/--prefer-pseudo",)
            ),
            "cases": CASES,
        },
        reads=(
            Files("scan", (BATCH.pattern(batch=BATCH_ID),)),
            Files("converted", (CASE_FILES.pattern(case=CASE),)),
        ),
        writes=(Files("pseudolabels"),),
        fan_out="cases",
        resources="gpu",
        image="pseudolabel",
        retries=2,
        hours=12,
        switch=PSEUDOLABELS,
        variant="merged",
        on_cluster={"weights": OnCluster.WEIGHTS},
    ),
    Stage(
        "split",
        SplitConfig,
        run_split,
        "Patient-level, stratified split: a held-out test set and cross-validation folds.",
        {
            "converted": Option(
                "Output folder of convert (its case manifests, never rewritten).", argument=True, at="converted"
            ),
            "out": Option("Output folder (split.json, splits_final.json).", flags=("--out", "-o"), at="split"),
            "test_fraction": Option("Share of patients held out for testing."),
            "cv_folds": Option("Cross-validation folds made.", parameters=("cv-folds",)),
            "batches_out": Option("Write the test cases in batches (a JSON list of batch ids), for a fan-out."),
            "batch_size": Option("Test cases per batch.", parameters=("predict-batch-size",)),
            "folds": MODEL_OPTIONS["folds"],
            "seed": Option("Random seed."),
            "clinical_csv": Option(
                "Clinical sheet (RADCURE's: patient_id, Ds Site, RADCURE-challenge...): stratify by site, fixed split."
            ),
            "site_column": Option("Column of the clinical sheet holding the site."),
            "fixed_split_column": Option("Column whose 'test' rows form the test set (RADCURE's: RADCURE-challenge)."),
        },
        reads=(Files("converted", (CASE_MANIFEST.pattern(),)),),
        writes=(Files("split"),),
        hours=1,
        on_cluster={"batches_out": OnCluster.BATCHES},  # batches of test cases for the prediction
    ),
    Stage(
        "assemble",
        AssembleConfig,
        assemble,
        "Write the nnU-Net raw dataset (test cases only in imagesTs) and verify it with nnU-Net.",
        {
            "converted": Option("Output folder of convert.", argument=True, at="converted"),
            "split": Option("Output folder of split.", at="split"),
            "out": Option("nnUNet_raw folder.", flags=("--out", "-o"), at="raw"),
            "labels_from": Option(
                "Merged label maps of pseudolabel (<case>/<case>.nii.gz).", at="pseudolabels", when="pseudolabel"
            ),
            "workers": Option("Processes of nnU-Net's dataset check (0: one per usable CPU)."),
        },
        model=("dataset", "dictionary"),
        reads=(
            Files("converted", ("cases/*/*",)),
            Files("split"),
            Files("pseudolabels", (MERGED_LABELS.pattern(),)),  # the merged maps, not the task maps below them
        ),
        writes=(Files("raw"),),
        internal=("verify",),
        whole_dataset=True,
    ),
    Stage(
        "preprocess",
        PreprocessConfig,
        preprocess,
        "nnU-Net fingerprint, planning and preprocessing on the training cases.",
        {
            "work": WORK,
            "split": Option("Output folder of split (splits_final.json).", at="split"),
            "planner": PLANNER,
            "batch_size": Option("Override the 3d_fullres batch size (needs --plans)."),
            "patch_size": Option("Override the patch size, z y x (needs --plans)."),
            "target_spacing": Option("Override the spacing, z y x (needs --plans)."),
            "workers": Option("Preprocessing processes (0: from CPUs and memory)."),
            "plans_from": PLANS_FROM,
        },
        model=("dataset", "configuration", "plans"),
        reads=(
            Files("raw", ("*/imagesTr/*", "*/labelsTr/*", "*/dataset.json")),
            Files("split", (NNUNET_SPLITS.pattern(),)),
        ),
        writes=(Files("preprocessed"),),
        resources="big-cpu",
        workflows=(),  # a cluster run shares it out: fingerprint, plan, preprocess-cases
    ),
    Stage(
        "fingerprint",
        FingerprintConfig,
        fingerprint,
        "nnU-Net's fingerprint of each training case of a batch (a cluster run's share of preprocess).",
        {
            "work": WORK,
            "fingerprints": Option("Folder of the per-case fingerprint records.", at="fingerprints"),
            "cases": CASES,
            "workers": Option("Processes (0: one per usable CPU)."),
        },
        model=("dataset",),
        reads=(Files("scan", (BATCH.pattern(batch=BATCH_ID),)), Files("raw", TRAINING_CASE)),
        writes=(Files("fingerprints"),),
        fan_out="cases",
        local=False,
        retries=2,
    ),
    Stage(
        "plan",
        PlanConfig,
        plan,
        "Merge the batches' fingerprints into nnU-Net's and plan (a cluster run's share of preprocess).",
        {
            "work": WORK,
            "split": Option("Output folder of split (splits_final.json).", at="split"),
            "fingerprints": Option("Folder of the per-case fingerprint records.", at="fingerprints"),
            "planner": PLANNER,
            "batch_size": Option("Override the 3d_fullres batch size (needs --plans)."),
            "patch_size": Option("Override the patch size, z y x (needs --plans)."),
            "target_spacing": Option("Override the spacing, z y x (needs --plans)."),
            "plans_from": PLANS_FROM,
        },
        model=("dataset", "configuration", "plans"),
        reads=(
            Files("fingerprints"),
            Files("raw", ("*/dataset.json",)),
            Files("split", (NNUNET_SPLITS.pattern(),)),
        ),
        writes=(Files("preprocessed", ("*/*.json",)),),
        internal=("workers",),
        local=False,
        retries=2,
        hours=2,
    ),
    Stage(
        "preprocess-cases",
        BatchConfig,
        preprocess_cases,
        "nnU-Net's preprocessing of a batch's training cases with the plans (a cluster run's share of preprocess).",
        {
            "work": WORK,
            "cases": CASES,
            "workers": Option("Preprocessing processes (0: from CPUs and memory)."),
        },
        model=("dataset",),
        reads=(
            Files("scan", (BATCH.pattern(batch=BATCH_ID),)),
            Files("preprocessed", ("*/*.json",)),
            Files("raw", TRAINING_CASE),
        ),
        writes=(Files("preprocessed", ("*/*/*",)),),  # the batch's preprocessed cases and reference segmentations
        fan_out="cases",
        resources="big-cpu",
        local=False,
        retries=2,
    ),
    Stage(
        "train",
        TrainConfig,
        train,
        "Train one fold; a re-run resumes from the last checkpoint.",
        {
            "work": WORK,
            "fold": Option("Fold to train."),
            "epochs": Option("Epochs (default: the trainer's).", parameters=("epochs",)),
            "iterations": ITERATIONS,
            "save_every": Option("Checkpoint every N epochs."),
            "device": DEVICE,
            "precision": PRECISION,
            "init_from": Option(
                "Pretrained model (nnU-Net model folder, TotalSegmentator task folder or model package): every "
                "layer but the head; preprocess with --plans-from it first.",
                parameters=("init-from",),
            ),
            "warmup_epochs": Option(
                "Learning-rate warm-up epochs from a tenth (default: a tenth of the epochs "
                "when fine-tuning, else none)."
            ),
            "store": STORE,
            "validate": Option("Predict the fold's validation cases at the end.", flags=("--validate/--no-validate",)),
            "seed": Option(
                "Random seed of the initial weights and the training process's draws (augmentation workers draw "
                "their own)."
            ),
        },
        model=("dataset", "trainer", "plans", "configuration"),
        reads=(Files("preprocessed"),),
        writes=(Files("results"),),
        fan_out="fold",
        resources="gpu",
        image="gpu",
        internal=("init_head",),
        retries=5,
        hours=96,
        publishes=True,
        whole_dataset=True,
        on_cluster={"store": OnCluster.RESULTS_STORE, "validate": False},  # checkpoints mirrored; validate: next
    ),
    Stage(
        "validate",
        ValidateConfig,
        validate,
        "Predict a trained fold's validation cases (the end of train as a step of its own, with more memory).",
        {
            "work": WORK,
            "fold": Option("Fold to validate."),
            "device": DEVICE,
            "precision": PRECISION,
            "store": Option("Store URI of the run's nnUNet_results: the fold restored from there, published there."),
        },
        model=("dataset", "trainer", "plans", "configuration"),
        # the fold's progress: what its training was (a retrained fold is validated again on a resume)
        reads=(Files("preprocessed"), Files("results", (f"{FIRST_STAGE}/fold_{{fold}}/{PROGRESS.basename}",))),
        writes=(Files("results"),),
        fan_out="fold",
        resources="big-gpu",  # nnU-Net's export resamples a case's logits in float64 (docs/benchmarks.md)
        image="gpu",
        local=False,  # a local run validates at the end of train
        retries=2,
        publishes=True,
        whole_dataset=True,
        on_cluster={"store": OnCluster.RESULTS_STORE},  # the fold from the store, its validation published
    ),
    Stage(
        "predict",
        PredictConfig,
        predict,
        "Predict the test set with the ensemble of folds; collect each fold's validation predictions.",
        {
            "work": WORK,
            "out": Option("Output folder (test/, validation/).", flags=("--out", "-o"), at="predictions"),
            "device": DEVICE,
            "precision": PRECISION,
            "tta": TTA,
            "step_size": STEP_SIZE,
            "cases": Option(
                "Only these test cases, without the folds' validation predictions (a batch of a fan-out).",
                flags=("--cases", "--case"),
            ),
        },
        model=("dataset", "trainer", "plans", "configuration", "folds"),
        reads=prediction_reads(FIRST_STAGE),
        writes=(Files("predictions", ("test/*.nii.gz",)),),  # nnU-Net's own files there differ per batch
        fan_out="cases",
        batches=SPLIT_BATCH,  # batches of test cases (split --batches-out), so that a retry or resume redoes one batch
        resources="gpu",
        image="gpu",
        retries=2,
    ),
    Stage(
        "postprocess",
        PostprocessConfig,
        postprocess,
        "nnU-Net's post-processing, decided on the folds' validation predictions, applied to the test predictions.",
        {
            "work": WORK,
            "predictions": Option("Output folder of predict (its test/ is post-processed).", at="predictions"),
            "out": Option(
                "Output folder (validation/, trials/, test/, decision.json).",
                flags=("--out", "-o"),
                at="postprocessing",
            ),
            "search": Option(
                f"{' or '.join(SEARCHES)}: nnU-Net's search on the validation folds, or the test predictions passed "
                "on unchanged (the search costs a full evaluation of the validation cases per label).",
                parameters=("postprocess-search",),
            ),
            "workers": Option("Processes of nnU-Net's post-processing (0: one per usable CPU)."),
        },
        model=("dataset", "trainer", "plans", "configuration", "folds"),
        reads=(  # the references, the folds' validation predictions with the model's JSON, the test predictions
            Files("preprocessed", (PLANNING_SUMMARY.pattern(), "*/gt_segmentations/*")),
            Files("results", (f"{FIRST_STAGE}/*.json", f"{FIRST_STAGE}/fold_*/validation/*")),
            Files("predictions", ("test/*.nii.gz",)),
        ),
        writes=(Files("postprocessing"),),
        resources="big-cpu",
    ),
    Stage(
        "evaluate",
        EvaluateConfig,
        evaluate,
        "Dice, HD95 and NSD per case and label, per-label statistics and the GTVp analysis.",
        {
            "reference": Option(
                "Folder of reference label maps (<case>.nii.gz).", argument=True, at="raw", below="{dataset}/labelsTs"
            ),
            "prediction": Option(
                "Folder of predicted label maps (<case>.nii.gz).", argument=True, at="predictions", below="test"
            ),
            "out": Option("Output folder (per_case.csv, summary.json).", flags=("--out", "-o"), at="evaluation"),
            "dictionary": DICTIONARY,
            "tolerance_mm": Option("NSD tolerance in mm."),
            "workers": WORKERS,
            "surface": Option("Compute HD95 and NSD (off: Dice only).", flags=("--surface/--no-surface",)),
            "nsd_voxels": Option(
                "Also the voxel-count NSD (column nsd_voxel_count; not comparable with published NSD).",
                flags=("--nsd-voxels",),
            ),
            "missing_as_empty": Option(
                "Count a case without a prediction as missed (every label empty) instead of failing.",
                flags=("--missing-as-empty",),
            ),
            "converted": Option("Output folder of convert: its manifests name the manual contours.", at="converted"),
            "pseudolabels": Option(
                "Output folder of pseudolabel: its merge records name each reference's source.",
                at="pseudolabels",
                when="pseudolabel",
            ),
            "postprocessed": Option(
                "Folder of post-processed predictions: evaluated alike into OUT/postprocessed/.",
                at="postprocessing",
                below="test",
                when="postprocess",
            ),
        },
        reads=(
            Files("raw", ("*/labelsTs/*",)),
            Files("predictions", ("test/*.nii.gz",)),
            Files("postprocessing", ("test/*.nii.gz",)),
            Files("converted", (CASE_MANIFEST.pattern(),)),
            Files("pseudolabels", (MERGE_RECORD.pattern(),)),
        ),
        writes=(Files("evaluation"),),
        resources="big-cpu",
        internal=("tolerances",),
    ),
    Stage(
        "second-stage",
        SecondStageConfig,
        second_stage,
        "Fine-tune one fold's tumour-focused second-stage model from the first stage's model of that fold.",
        {
            "work": WORK,
            "fold": Option("Fold to train (initialised from the first stage's model of the same fold)."),
            "loss": Option(
                f"Tumour-focused loss: {', '.join(LOSSES)} (the first stage's trainer with it).",
                parameters=("second-stage-loss",),
            ),
            "epochs": Option("Epochs (default: the trainer's).", parameters=("second-stage-epochs",)),
            "iterations": ITERATIONS,
            "warmup_epochs": Option("Learning-rate warm-up epochs from a tenth (default: a tenth of the epochs)."),
            "save_every": Option("Checkpoint every N epochs."),
            "device": DEVICE,
            "precision": PRECISION,
            "store": STORE,
            "seed": Option("Random seed of the training process's draws."),
        },
        model=("dataset", "trainer", "plans", "configuration"),
        reads=(
            Files("preprocessed"),
            Files("results", (f"{FIRST_STAGE}/*.json", f"{FIRST_STAGE}/fold_{{fold}}/checkpoint_final.pth")),
        ),
        writes=(Files("results"),),
        fan_out="fold",
        resources="gpu",
        image="gpu",
        retries=5,
        hours=48,
        publishes=True,
        whole_dataset=True,
        switch=SECOND_STAGE_SWITCH,
        on_cluster={"store": OnCluster.RESULTS_STORE},  # as train's
    ),
    Stage(
        "second-predict",
        SecondPredictConfig,
        second_predict,
        "Predict the test set with the second stage's ensemble of folds.",
        {
            "work": WORK,
            "out": Option("Output folder (test/).", flags=("--out", "-o"), at="second"),
            "loss": Option(f"The second stage's loss: {', '.join(LOSSES)}.", parameters=("second-stage-loss",)),
            "device": DEVICE,
            "precision": PRECISION,
            "tta": TTA,
            "step_size": STEP_SIZE,
            "cases": Option("Only these test cases (a batch of a fan-out).", flags=("--cases", "--case")),
        },
        model=("dataset", "trainer", "plans", "configuration", "folds"),
        reads=prediction_reads(SECOND_STAGE),
        writes=(Files("second", ("test/*.nii.gz",)),),
        fan_out="cases",
        batches=SPLIT_BATCH,
        resources="gpu",
        image="gpu",
        retries=2,
        switch=SECOND_STAGE_SWITCH,
    ),
    Stage(
        "compare-stages",
        CompareConfig,
        compare,
        "First against second stage on the tumour per test case, paired: Dice, HD95, NSD, lesions found.",
        {
            "reference": Option(
                "Folder of reference label maps (<case>.nii.gz).", argument=True, at="raw", below="{dataset}/labelsTs"
            ),
            "first": Option("The first stage's test predictions.", at="predictions", below="test"),
            "second": Option("The second stage's test predictions.", at="second", below="test"),
            "out": Option("Output folder (comparison.json, per_case.csv).", flags=("--out", "-o"), at="comparison"),
            "dictionary": DICTIONARY,
            "tolerance_mm": Option("NSD tolerance in mm."),
        },
        reads=(
            Files("raw", ("*/labelsTs/*",)),
            Files("predictions", ("test/*.nii.gz",)),
            Files("second", ("test/*.nii.gz",)),
        ),
        writes=(Files("comparison"),),
        resources="big-cpu",
        switch=SECOND_STAGE_SWITCH,
        variant="second",
    ),
    Stage(
        "report",
        ReportConfig,
        report,
        "Write report.html (self-contained) and report.md from a run's outputs.",
        {
            "run_dir": Option("Folder of the run.", at=RUN),
            "out": Option("Output folder.", flags=("--out", "-o"), at="report"),
            "dataset": MODEL_OPTIONS["dataset"],
            "trainer": Option(
                "The first stage's trainer (its second stage is named after it).", parameters=("trainer",)
            ),
            "run_id": Option(
                "The run's name in the report (a cluster run's store prefix; default: the run folder's name)."
            ),
            "synthetic": Option(
                "Mark the numbers as a synthetic demo.", flags=("--synthetic",), locally=Local.SYNTHETIC
            ),
            "comparison": Option(
                "Output folder of compare-stages (the second stage's section).", at="comparison", when="compare-stages"
            ),
            "postprocessing": Option(
                "Output folder of postprocess (the post-processing section).", at="postprocessing", when="postprocess"
            ),
        },
        reads=(
            Files("scan", (INVENTORY.pattern(),)),
            Files("converted", (CASE_MANIFEST.pattern(),)),
            Files("split"),
            Files("raw", ("*/dataset.json", f"*/imagesTs/{image_name(CASE)}", f"*/labelsTs/{label_name(CASE)}")),
            Files("preprocessed", ("*/*.json",)),
            Files("results", ("*/*/*.json", PROGRESS.pattern())),
            Files("predictions", ("test/{case}.nii.gz",)),
            Files("evaluation"),
            Files("comparison"),
            Files("postprocessing", (DECISION.pattern(),)),
        ),
        writes=(Files("report"),),
        cases_from=REVIEW,  # the case review's images only
        hours=2,
        on_cluster={"run_id": OnCluster.RUN_PREFIX},
    ),
    Stage(
        "export",
        ExportConfig,
        export,
        "Package the trained model (nnU-Net's export layout, model card, dictionary), naming no patient.",
        {
            "work": WORK,
            "run_dir": Option("Folder of the run (its split, listings and evaluation make the model card).", at=RUN),
            "out": Option("Output folder (the package zip, MODEL_CARD.md).", flags=("--out", "-o"), at="export"),
            "version": Option("Version of the package (in its name and model card).", parameters=("model-version",)),
            "synthetic": Option(
                "Mark the model as trained on synthetic data (on its card and in model.json).",
                flags=("--synthetic",),
                locally=Local.SYNTHETIC,
            ),
        },
        model=("dataset", "dictionary", "trainer", "plans", "configuration", "folds"),
        reads=(
            Files("preprocessed", (PLANNING_SUMMARY.pattern(),)),
            Files(
                "results",
                (
                    f"{FIRST_STAGE}/*.json",
                    f"{FIRST_STAGE}/fold_*/checkpoint_final.pth",
                    f"{FIRST_STAGE}/fold_*/progress.png",
                ),
            ),
            Files("split", (SPLIT.pattern(),)),
            Files("converted", (CASE_LISTING.pattern(),)),
            Files("evaluation", (EVALUATION_SUMMARY.pattern(),)),
            Files("postprocessing", (DECISION.pattern(), *(f"validation/postprocessing.{e}" for e in ("json", "pkl")))),
        ),
        writes=(Files("export"),),
        retries=2,
        hours=1,
        switch=PACKAGE,
    ),
    Stage(
        "infer",
        InferConfig,
        infer,
        "Contour new patients with a model package: per CT series an RTSTRUCT, a DICOM-SEG and a NIfTI label map.",
        {
            "input": Option("Folder of DICOM files of the new patients, in any layout.", argument=True, at=INPUT),
            "model": Option(
                "Model package: the zip export wrote, its folder or its store URI (s3://...).", at="export"
            ),
            "out": Option("Output folder (CASE/SERIES/ files, cases.csv).", flags=("--out", "-o"), at="inference"),
            "formats": Option(
                f"Outputs: {','.join(FORMATS)} (a,b or repeated).", flags=("--format",), parameters=("formats",)
            ),
            "device": DEVICE,
            "precision": PRECISION,
            "folds": Option("Folds of the package ensembled (default: all it holds).", parameters=("folds",)),
            "step_size": STEP_SIZE,
            "cases": Option("Only these patients (case ids as the scan names them).", flags=("--cases", "--case")),
            "split": Option("Only the held-out test patients of this split folder.", at="split", when="split"),
            "limit": Option("At most this many patients (0: all)."),
            "postprocess": Option(
                "Apply the post-processing the package carries (decided on the run's validation folds).",
                flags=("--postprocess/--no-postprocess",),
            ),
            "workers": WORKERS,
            "inventory": Option("The scan's inventory (a batch's slice): its patients, under its case ids."),
            "source": Option("Store URI of the DICOM tree; the inventory's patients' files are staged into INPUT."),
        },
        reads=(Files("scan", (BATCH.pattern(batch=BATCH_ID),)),),
        writes=(Files("inference", ("*/*", "*/*/*")),),  # the cases' folders; the listing is gathered after
        fan_out="cases",
        resources="gpu",
        image="gpu",
        retries=2,
        hours=6,
        workflows=(INFERENCE,),
        on_cluster={
            "input": OnCluster.STAGED_INPUT,
            "source": OnCluster.INPUT_PREFIX,
            "inventory": OnCluster.BATCH_INVENTORY,
            "model": OnCluster.MODEL,
        },
        gather=Gather(
            "infer-listing",
            "inference",
            CONTOURS.pattern(),
            f"{INFERENCE_LISTING.name},{INFERENCE_RECORD.name}",
            "infer-listing",
        ),
    ),
)

BY_NAME = {stage.name: stage for stage in STAGES}
NAMES = tuple(BY_NAME)


def writers(path: str) -> list[str]:
    """The stages writing the run location that holds ``path`` (relative to the run)."""
    held = [name for name, (where, _) in LOCATIONS.items() if path == where or path.startswith(where + "/")]
    if not held:
        return []
    location = max(held, key=lambda name: len(relative(name)))  # the innermost (nnunet/nnUNet_raw, not nnunet)
    return [stage.name for stage in STAGES if any(files.location == location for files in stage.writes)]


def missing_input(stage: AnyStage, config: Any, missing: Path) -> str | None:
    """What to do about a file the stage needed that is missing below one of its input folders (None: the file is
    not below one: not the user's to fix)."""
    for name, option in stage.options.items():
        given = getattr(config, name, None)
        if name == "out" or not isinstance(given, Path) or not missing.is_relative_to(given):
            continue
        if option.at in (None, INPUT):
            return f"check --{name.replace('_', '-')}: {given} lacks {missing.relative_to(given)}"
        below = len(Path(option.below).parts)
        root = given.parents[below - 1] if below else given
        where = missing.relative_to(root).as_posix()
        path = where if option.at == RUN else f"{relative(option.at)}/{where}"
        found = [s for s in writers(path) if s != stage.name]
        return f"run {' or '.join(found)} first" if found else f"check --{name.replace('_', '-')}"
    return None


def run_stage(stage: AnyStage, config: Any) -> StageResult:
    """Run a stage: a file it needs that is missing from the folders it was given is a usage error naming the
    stage that writes it, never an internal error."""
    try:
        return stage.run(config)
    except FileNotFoundError as exc:
        advice = missing_input(stage, config, Path(exc.filename)) if exc.filename else None
        if advice is None:
            raise
        raise UserError(f"{exc.filename} is missing", advice) from exc

"""Batch planning: which frames make which stack, where each stack's outputs go,
and which stacks a previous run already finished.

Everything here is pure bookkeeping on paths and small JSON files; the stacks
themselves are processed by :mod:`napari_focus_stack.distributed`. The
modules: :mod:`.grouping` (stacks), :mod:`.outputs` (options, output names
and paths), :mod:`.manifest` (what is complete), :mod:`.planning` (the one
planner of the command line and the batch widget).

Frames are grouped into :class:`Stack` objects in one of four ways:

- :func:`group_by_subfolder`: every folder under a root that holds images;
- :func:`group_by_size`: consecutive runs of N frames of a flat folder;
- :func:`group_by_regex`: a named group ``stack`` in the file name;
- :func:`group_by_sweeps`: focus sweeps found in the frames themselves.

Output names come from stack names through :func:`safe_output_name`, so a
folder or regex group can never place a file outside the output folder.
A stack counts as finished only when its manifest (``<name>.json``, written
atomically after all its images) exists and records the same parameters,
inputs and outputs (:func:`is_complete`).

>>> [stack.name for stack in group_by_size(["a1.png", "a2.png", "a3.png", "a4.png"], 2)]
['stack_001', 'stack_002']
>>> safe_output_name("../../etc/passwd")
'etc_passwd'
"""

from .grouping import (
    STACK_GROUP,
    Stack,
    SweepSplit,
    group_by_regex,
    group_by_size,
    group_by_subfolder,
    group_by_sweeps,
    list_images,
    microscope_stacks,
    stack_channels,
)
from .manifest import (
    batch_outputs_reason,
    holds_batch_outputs,
    input_fingerprints,
    is_complete,
    manifest_record,
    read_manifest,
    write_manifest,
)
from .outputs import (
    MAX_NAME_LENGTH,
    OUTPUT_FORMATS,
    BatchOptions,
    BatchPlanError,
    StackOutputs,
    plan_outputs,
    safe_output_name,
    stack_outputs,
)
from .planning import GROUPINGS, BatchPlan, FoundStacks, NoStacksError, Phrasing, Tally, find_stacks, plan_batch

__all__ = [
    "GROUPINGS",
    "MAX_NAME_LENGTH",
    "OUTPUT_FORMATS",
    "STACK_GROUP",
    "BatchOptions",
    "BatchPlan",
    "BatchPlanError",
    "FoundStacks",
    "NoStacksError",
    "Phrasing",
    "Stack",
    "StackOutputs",
    "SweepSplit",
    "Tally",
    "batch_outputs_reason",
    "find_stacks",
    "group_by_regex",
    "group_by_size",
    "group_by_subfolder",
    "group_by_sweeps",
    "holds_batch_outputs",
    "input_fingerprints",
    "is_complete",
    "list_images",
    "manifest_record",
    "microscope_stacks",
    "plan_batch",
    "plan_outputs",
    "read_manifest",
    "safe_output_name",
    "stack_channels",
    "stack_outputs",
    "write_manifest",
]

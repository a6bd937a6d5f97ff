"""hlo_summary on a small hand-written module shaped like libtpu's output (no libtpu needed).

Two things only a TPU compile of a large model shows, pinned here on text: the TPU's fused
reduce-scatter (a kCustom fusion calling `%all-reduce-scatter.N`) and XLA's collective
matmul loop, which counts by 2 from 0 to 16 (8 trips, not 16) and passes the weight around
the devices with collective-permutes. tests/test_tpu_aot.py checks the fused reduce-scatters
on a real libtpu compile.
"""

from vmae2_jax.training import hlo_summary

_HLO = """HloModule jit_step, entry_computation_layout={()->()}

%add (x: bf16[], y: bf16[]) -> bf16[] {
  %x = bf16[] parameter(0)
  %y = bf16[] parameter(1)
  ROOT %sum = bf16[] add(%x, %y)
}

%all-reduce-scatter.1 (input.1: bf16[128,64]) -> bf16[32,64] {
  %input.1 = bf16[128,64]{1,0:T(8,128)(2,1)} parameter(0)
  %all-reduce.5 = bf16[128,64]{1,0:T(8,128)(2,1)} all-reduce(%input.1), channel_id=1, replica_groups={{0,1,2,3}}, to_apply=%add
  %zero.1 = u32[] constant(0)
  %pid = u32[] partition-id()
  %rows = u32[] constant(32)
  %offset = u32[]{:T(128)} multiply(%pid, %rows)
  ROOT %dynamic-slice.1 = bf16[32,64]{1,0:T(8,128)(2,1)} dynamic-slice(%all-reduce.5, %offset, %zero.1), dynamic_slice_sizes={32,64}
}

%windowed_dot_general_body_ag (param.1: (bf16[8,64], bf16[2,64], u32[])) -> (bf16[8,64], bf16[2,64], u32[]) {
  %param.1 = (bf16[8,64]{1,0}, bf16[2,64]{1,0}, u32[]{:T(128)}) parameter(0)
  %x.1 = bf16[8,64]{1,0} get-tuple-element(%param.1), index=0
  %w.1 = bf16[2,64]{1,0} get-tuple-element(%param.1), index=1
  %i.1 = u32[]{:T(128)} get-tuple-element(%param.1), index=2
  %collective-permute-start.1 = (bf16[2,64]{1,0}, bf16[2,64]{1,0}, u32[]{:S(2)}, u32[]{:S(2)}) collective-permute-start(%w.1), channel_id=2, source_target_pairs={{0,1},{1,2},{2,3},{3,0}}
  %collective-permute-done.1 = bf16[2,64]{1,0} collective-permute-done(%collective-permute-start.1)
  %dot.1 = f32[8,2]{1,0} dot(%x.1, %collective-permute-done.1), lhs_contracting_dims={1}, rhs_contracting_dims={1}
  %two = u32[] constant(2)
  %next = u32[]{:T(128)} add(%i.1, %two)
  ROOT %tuple.1 = (bf16[8,64]{1,0}, bf16[2,64]{1,0}, u32[]{:T(128)}) tuple(%x.1, %collective-permute-done.1, %next)
}

%windowed_dot_general_cond_ag (param.2: (bf16[8,64], bf16[2,64], u32[])) -> pred[] {
  %limit = u32[]{:T(128)} constant(16)
  %param.2 = (bf16[8,64]{1,0}, bf16[2,64]{1,0}, u32[]{:T(128)}) parameter(0)
  %i.2 = u32[]{:T(128)} get-tuple-element(%param.2), index=2
  ROOT %compare.1 = pred[] compare(%i.2, %limit), direction=LT
}

%layer_body (param.3: (bf16[8,64], s32[])) -> (bf16[8,64], s32[]) {
  %param.3 = (bf16[8,64]{1,0}, s32[]) parameter(0)
  %h = bf16[8,64]{1,0} get-tuple-element(%param.3), index=0
  %j = s32[] get-tuple-element(%param.3), index=1
  %w.3 = bf16[64,64]{1,0} all-gather(%h), channel_id=3, replica_groups={{0,1,2,3}}, dimensions={0}
  %dot.3 = bf16[8,64]{1,0} dot(%h, %w.3), lhs_contracting_dims={1}, rhs_contracting_dims={0}
  %one = s32[] constant(1)
  %j.next = s32[] add(%j, %one)
  ROOT %tuple.3 = (bf16[8,64]{1,0}, s32[]) tuple(%dot.3, %j.next)
}

%layer_cond (param.4: (bf16[8,64], s32[])) -> pred[] {
  %param.4 = (bf16[8,64]{1,0}, s32[]) parameter(0)
  %j.2 = s32[] get-tuple-element(%param.4), index=1
  %depth = s32[] constant(12)
  ROOT %compare.2 = pred[] compare(%j.2, %depth), direction=LT
}

ENTRY %main.1 (a: bf16[8,64], g: bf16[128,64], s: bf16[]) -> (bf16[32,64], bf16[8,64], bf16[8,64], bf16[]) {
  %a = bf16[8,64]{1,0} parameter(0)
  %g = bf16[128,64]{1,0} parameter(1)
  %s = bf16[] parameter(2)
  %w.0 = bf16[2,64]{1,0} slice(%a), slice={[0:2], [0:64]}
  %zero = u32[] constant(0)
  %zero.copy = u32[]{:T(128)} copy(%zero)
  %init.1 = (bf16[8,64]{1,0}, bf16[2,64]{1,0}, u32[]{:T(128)}) tuple(%a, %w.0, %zero.copy)
  %while.1 = (bf16[8,64]{1,0}, bf16[2,64]{1,0}, u32[]{:T(128)}) while(%init.1), condition=%windowed_dot_general_cond_ag, body=%windowed_dot_general_body_ag
  %j.0 = s32[] constant(0)
  %init.2 = (bf16[8,64]{1,0}, s32[]) tuple(%a, %j.0)
  %while.2 = (bf16[8,64]{1,0}, s32[]) while(%init.2), condition=%layer_cond, body=%layer_body
  %fusion.9 = bf16[32,64]{1,0:T(8,128)(2,1)} fusion(%g), kind=kCustom, calls=%all-reduce-scatter.1
  %all-reduce-start.2 = bf16[] all-reduce-start(%s), channel_id=4, replica_groups={{0,1,2,3}}, to_apply=%add
  %all-reduce-done.2 = bf16[] all-reduce-done(%all-reduce-start.2)
  %out.1 = bf16[8,64]{1,0} get-tuple-element(%while.1), index=0
  %out.2 = bf16[8,64]{1,0} get-tuple-element(%while.2), index=0
  ROOT %result = (bf16[32,64]{1,0}, bf16[8,64]{1,0}, bf16[8,64]{1,0}, bf16[]) tuple(%fusion.9, %out.1, %out.2, %all-reduce-done.2)
}
"""


def test_fused_reduce_scatter_counts_once_and_its_inner_all_reduce_not_at_all():
  counted = hlo_summary.collectives(_HLO)
  assert counted["reduce-scatter"] == {"count": 1, "bytes": 32 * 64 * 2, "large": 0}
  assert counted["all-reduce"]["count"] == 1  # the async scalar one, not the fused one's
  assert counted["collective-permute"] == {"count": 1, "bytes": 2 * 64 * 2, "large": 0}
  assert counted["all-gather"]["count"] == 1
  summary = hlo_summary.summarize(_HLO)
  assert summary["collectives"] == {k: v["count"] for k, v in counted.items()}
  assert summary["collective_bytes"]["reduce-scatter"] == 32 * 64 * 2
  assert hlo_summary.collective_shapes(_HLO, "reduce-scatter") == [[(32, 64)]]
  assert hlo_summary.collective_shapes(_HLO, "all-gather") == [[(64, 64)]]


def test_loop_trip_counts_follow_the_counters_start_and_step():
  summary = hlo_summary.summarize(_HLO)
  assert summary["while_loops"] == summary["matmul_loops"] == 2
  assert summary["trip_counts"] == [8, 12]  # 0..16 by 2; a scan's 0..12 by 1
  assert summary["collective_matmul_loops"] == 1  # the scan's all-gather is not one


def test_a_known_trip_count_wins():
  hlo = _HLO.replace("body=%layer_body",
                     'body=%layer_body, backend_config={"known_trip_count":{"n":"40"}}')
  assert hlo_summary.summarize(hlo)["trip_counts"] == [8, 40]


# A rejection sampler split over devices, as XLA:CPU's partitioner left jax.random.beta
# per data shard: the loop runs until every device's draw is accepted (an all-reduce in its
# condition), for a number of trips nobody knows before.
_SAMPLER = """%or (x: pred[], y: pred[]) -> pred[] {
  %x = pred[] parameter(0)
  %y = pred[] parameter(1)
  ROOT %either = pred[] or(%x, %y)
}

%reject_body (p.5: (f32[1], u32[2])) -> (f32[1], u32[2]) {
  %p.5 = (f32[1]{0}, u32[2]{0}) parameter(0)
  %v = f32[1]{0} get-tuple-element(%p.5), index=0
  %k = u32[2]{0} get-tuple-element(%p.5), index=1
  %v.next = f32[1]{0} multiply(%v, %v)
  ROOT %t.5 = (f32[1]{0}, u32[2]{0}) tuple(%v.next, %k)
}

%reject_cond (p.6: (f32[1], u32[2])) -> pred[] {
  %p.6 = (f32[1]{0}, u32[2]{0}) parameter(0)
  %v.6 = f32[1]{0} get-tuple-element(%p.6), index=0
  %not_yet = pred[] fusion(%v.6), kind=kLoop, calls=%fused_le
  ROOT %all-reduce.9 = pred[] all-reduce(%not_yet), channel_id=9, replica_groups={{0,1,2,3,4,5,6,7}}, to_apply=%or
}
"""


def test_a_loop_of_unknown_length_running_a_collective_is_found():
  sampler = _HLO.replace("ENTRY %main.1", _SAMPLER + "\nENTRY %main.1").replace(
      "  %out.1 = bf16", "  %init.3 = (f32[1]{0}, u32[2]{0}) tuple(%s, %s)\n"
      "  %while.3 = (f32[1]{0}, u32[2]{0}) while(%init.3), condition=%reject_cond, "
      "body=%reject_body\n  %out.1 = bf16")
  summary = hlo_summary.summarize(sampler)
  assert summary["open_ended_collective_loops"] == 1 and summary["while_loops"] == 3
  # The collective matmul and the scanned layers run collectives for a count known up front.
  assert hlo_summary.summarize(_HLO)["open_ended_collective_loops"] == 0
  # The same loop with its collective gone (each device draws for itself): nothing found.
  alone = sampler.replace(
      "ROOT %all-reduce.9 = pred[] all-reduce(%not_yet), channel_id=9, "
      "replica_groups={{0,1,2,3,4,5,6,7}}, to_apply=%or", "ROOT %still = pred[] copy(%not_yet)")
  assert hlo_summary.summarize(alone)["open_ended_collective_loops"] == 0


def test_a_conditional_whose_branch_runs_a_collective_is_found():
  # lax.platform_dependent left unresolved: a conditional picking the TPU or the CPU branch.
  branches = """%on_tpu (p.7: bf16[8,64]) -> bf16[8,64] {
  %p.7 = bf16[8,64]{1,0} parameter(0)
  ROOT %gathered = bf16[8,64]{1,0} all-gather(%p.7), channel_id=7, replica_groups={{0,1,2,3}}, dimensions={0}
}

%on_cpu (p.8: bf16[8,64]) -> bf16[8,64] {
  %p.8 = bf16[8,64]{1,0} parameter(0)
  ROOT %same = bf16[8,64]{1,0} copy(%p.8)
}
"""
  cond = _HLO.replace("ENTRY %main.1", branches + "\nENTRY %main.1").replace(
      "  %out.1 = bf16", "  %which = s32[] constant(1)\n  %picked = bf16[8,64]{1,0} "
      "conditional(%which, %a, %a), branch_computations={%on_cpu, %on_tpu}\n  %out.1 = bf16")
  assert hlo_summary.summarize(cond)["conditional_collectives"] == 1
  assert hlo_summary.summarize(_HLO)["conditional_collectives"] == 0
  plain = cond.replace("all-gather(%p.7), channel_id=7, replica_groups={{0,1,2,3}}, "
                       "dimensions={0}", "copy(%p.7)")
  assert hlo_summary.summarize(plain)["conditional_collectives"] == 0


# A two-slice program's cross-slice all-reduce (send/recv for libtpu's megascale runtime)
# beside a jax.pure_callback's host send (JAX's own transfer handler), as libtpu prints them.
_MULTI_SLICE = """HloModule jit_step, entry_computation_layout={()->()}

ENTRY %main (g: bf16[48,8,128]) -> bf16[48,8,128] {
  %g = bf16[48,8,128]{2,1,0:T(8,128)(2,1)} parameter(0)
  %after-all = token[] after-all()
  %send = (bf16[48,8,128]{2,1,0:T(8,128)(2,1)}, u32[], token[]) send(%g, %after-all), channel_id=3, is_host_transfer=true, frontend_attributes={_xla_host_transfer_handler_name="xla_megascale_runtime",_xla_host_transfer_rendezvous="all-reduce.31_0",_xla_megascale_reduce_operation="SUM",_xla_megascale_target="{1,2}x{0:3}",_xla_megascale_transfer_type="ALL_REDUCE"}
  %recv = (bf16[48,8,128]{2,1,0:T(8,128)(2,1)}, u32[], token[]) recv(%after-all), channel_id=2, is_host_transfer=true, frontend_attributes={_xla_host_transfer_handler_name="xla_megascale_runtime",_xla_host_transfer_rendezvous="all-reduce.31_0",_xla_megascale_reduce_operation="SUM",_xla_megascale_target="{1,2}x{0:3}",_xla_megascale_transfer_type="ALL_REDUCE"}
  %send-done = token[] send-done(%send), channel_id=3, is_host_transfer=true, frontend_attributes={_xla_host_transfer_handler_name="xla_megascale_runtime"}
  %recv-done = (bf16[48,8,128]{2,1,0:T(8,128)(2,1)}, token[]) recv-done(%recv), channel_id=2, is_host_transfer=true, frontend_attributes={_xla_host_transfer_handler_name="xla_megascale_runtime"}
  %send.1 = (f32[8]{0}, u32[], token[]) send(%g, %after-all), channel_id=4, is_host_transfer=true, frontend_attributes={_xla_host_transfer_handler_name="tf_rendezvous",_xla_host_transfer_rendezvous="host_callback_0"}
  ROOT %r = bf16[48,8,128]{2,1,0:T(8,128)(2,1)} get-tuple-element(%recv-done), index=0
}
"""


def test_cross_slice_transfers_are_dcn_traffic_not_host_callbacks():
  s = hlo_summary.summarize(_MULTI_SLICE)
  assert s["dcn_transfers"] == {"ALL_REDUCE": 1}  # the send; its recv is the same transfer
  assert s["dcn_bytes"] == {"ALL_REDUCE": 48 * 8 * 128 * 2}
  assert s["host_transfers"] == 1  # the callback's send only
  assert hlo_summary.host_callbacks(s) == ["1 host send/recv"]
  assert hlo_summary.summarize(_HLO)["dcn_transfers"] == {}

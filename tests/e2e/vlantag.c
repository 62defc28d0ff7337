/* tc programs that make a test host's NIC a VLAN access port without the 8021q module.
 *
 * Tag what it sends with 802.1Q VLAN VID, untag what it receives on VID (tests/e2e/vlantag.py). */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>

#ifndef VID
#error "build with -DVID=<1..4094>"
#endif

static long (*bpf_skb_vlan_push)(struct __sk_buff *skb, __u16 proto, __u16 tci) = (void *)BPF_FUNC_skb_vlan_push;
static long (*bpf_skb_vlan_pop)(struct __sk_buff *skb) = (void *)BPF_FUNC_skb_vlan_pop;

__attribute__((section("tc/egress"), used)) int tag(struct __sk_buff *skb)
{
    bpf_skb_vlan_push(skb, __builtin_bswap16(0x8100), VID);
    return TC_ACT_OK;
}

__attribute__((section("tc/ingress"), used)) int untag(struct __sk_buff *skb)
{
    if (skb->vlan_present && skb->vlan_proto == __builtin_bswap16(0x8100) && (skb->vlan_tci & 0xfff) == VID)
        bpf_skb_vlan_pop(skb);
    return TC_ACT_OK;
}

char _license[] __attribute__((section("license"), used)) = "GPL";

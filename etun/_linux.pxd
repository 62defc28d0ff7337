# Extern-only Linux/libc declarations the datapath calls: threads, clocks, batched socket I/O.

from libc.stdint cimport uint8_t, uint16_t, uint32_t


cdef extern from "<pthread.h>" nogil:
    ctypedef struct pthread_mutex_t:
        pass
    ctypedef struct pthread_mutexattr_t:
        pass
    int pthread_mutex_init(pthread_mutex_t *mutex, const pthread_mutexattr_t *attr)
    int pthread_mutex_destroy(pthread_mutex_t *mutex)
    int pthread_mutex_lock(pthread_mutex_t *mutex)
    int pthread_mutex_trylock(pthread_mutex_t *mutex)
    int pthread_mutex_unlock(pthread_mutex_t *mutex)

cdef extern from "<time.h>" nogil:
    ctypedef long time_t
    cdef struct timespec:
        time_t tv_sec
        long tv_nsec
    ctypedef int clockid_t
    int clock_gettime(clockid_t clk_id, timespec *tp)
    clockid_t CLOCK_MONOTONIC
    clockid_t CLOCK_MONOTONIC_COARSE
    clockid_t CLOCK_REALTIME_COARSE

cdef extern from "<sys/uio.h>" nogil:
    cdef struct iovec:
        void *iov_base
        size_t iov_len
    ssize_t writev(int fd, const iovec *iov, int iovcnt)

cdef extern from "<sys/socket.h>" nogil:
    ctypedef uint32_t socklen_t
    cdef struct msghdr:
        void *msg_name
        socklen_t msg_namelen
        iovec *msg_iov
        size_t msg_iovlen
        void *msg_control
        size_t msg_controllen
        int msg_flags
    cdef struct mmsghdr:
        msghdr msg_hdr
        unsigned int msg_len
    cdef struct cmsghdr:
        size_t cmsg_len
        int cmsg_level
        int cmsg_type
    cmsghdr *CMSG_FIRSTHDR(msghdr *msgh)
    cmsghdr *CMSG_NXTHDR(msghdr *msgh, cmsghdr *cmsg)
    unsigned char *CMSG_DATA(cmsghdr *cmsg)
    size_t CMSG_SPACE(size_t length)
    size_t CMSG_LEN(size_t length)
    int recvmmsg(int sockfd, mmsghdr *msgvec, unsigned int vlen, int flags, timespec *timeout)
    int sendmmsg(int sockfd, mmsghdr *msgvec, unsigned int vlen, int flags)
    int getsockopt(int sockfd, int level, int optname, void *optval, socklen_t *optlen)
    int SOL_SOCKET
    int AF_INET
    int AF_INET6
    int SOL_PACKET
    int SO_RXQ_OVFL
    int MSG_DONTWAIT
    int MSG_TRUNC

cdef extern from "<netinet/in.h>" nogil:
    int IPPROTO_UDP

cdef extern from "<netinet/udp.h>" nogil:
    int UDP_SEGMENT           # UDP GSO: one send, many datagrams of gso_size (Linux 4.18)
    int UDP_GRO               # UDP GRO: one receive, many coalesced datagrams (Linux 5.0)

cdef extern from "<linux/if_packet.h>" nogil:
    cdef struct tpacket_auxdata:
        uint32_t tp_status
        uint16_t tp_vlan_tci
        uint16_t tp_vlan_tpid
    cdef struct tpacket_stats:
        unsigned int tp_drops
    int PACKET_AUXDATA
    int PACKET_STATISTICS
    int TP_STATUS_VLAN_VALID
    int TP_STATUS_VLAN_TPID_VALID

cdef extern from "<poll.h>" nogil:
    cdef struct pollfd:
        int fd
        short events
        short revents
    ctypedef unsigned long nfds_t
    int poll(pollfd *fds, nfds_t nfds, int timeout)
    short POLLIN

cdef extern from "<unistd.h>" nogil:
    ssize_t read(int fd, void *buf, size_t count)
    ssize_t write(int fd, const void *buf, size_t count)
    int close(int fd)

cdef extern from "<sys/eventfd.h>" nogil:
    int eventfd(unsigned int initval, int flags)
    int EFD_NONBLOCK
    int EFD_CLOEXEC

cdef extern from "<sched.h>" nogil:
    int sched_yield()

cdef extern from "<pthread.h>" nogil:
    ctypedef unsigned long pthread_t
    pthread_t pthread_self()
    int pthread_setname_np(pthread_t thread, const char *name)

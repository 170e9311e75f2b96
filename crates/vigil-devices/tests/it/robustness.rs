//! Arbitrary input never panics a decoder.

use crate::{ctx, read_shared};
use proptest::prelude::*;
use vigil_devices::gatt::{self, Characteristic};
use vigil_devices::hl7::parse_oru_with;
use vigil_devices::mllp::MllpDecoder;
use vigil_devices::{decoder_for, formats};

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_bytes_never_panic_any_gatt_decoder(
        bytes in proptest::collection::vec(any::<u8>(), 0..40),
    ) {
        for c in Characteristic::ALL {
            let _ = gatt::decode(c.uuid(), &bytes, &ctx());
        }
    }

    #[test]
    fn flag_bytes_with_random_tails_never_panic(
        flags in any::<u8>(),
        tail in proptest::collection::vec(any::<u8>(), 0..32),
    ) {
        let mut bytes = vec![flags];
        bytes.extend(tail);
        for c in Characteristic::ALL {
            if let Ok(d) = gatt::decode(c.uuid(), &bytes, &ctx()) {
                prop_assert!(d.fields.is_object());
                for r in &d.readings {
                    let forms = usize::from(r.value.is_some())
                        + usize::from(!r.components.is_empty())
                        + usize::from(r.absent.is_some());
                    prop_assert_eq!(forms, 1, "{:?}", r);
                }
            }
        }
    }

    #[test]
    fn random_bytes_never_panic_any_registered_decoder(
        bytes in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        for f in formats() {
            let d = decoder_for(&f).expect("listed format");
            let _ = d.decode(&bytes, &ctx());
        }
    }

    #[test]
    fn random_text_never_panics_the_hl7_parser(text in "\\PC{0,300}") {
        let _ = parse_oru_with(&text, &ctx());
        let _ = parse_oru_with(&format!("MSH|^~\\&|{text}"), &ctx());
    }

    #[test]
    fn mutated_monitor_messages_never_panic_and_account_for_every_obx(
        cut in 0usize..1300,
        insert in "[|^~\\\\&\r\n 0-9A-Z.+-]{0,8}",
    ) {
        let text = read_shared("hl7/mindray-vs900-oru.hl7");
        let at = text.char_indices().map(|(i, _)| i).nth(cut).unwrap_or(text.len());
        let mutated = format!("{}{insert}{}", &text[..at], &text[at..]);
        if let Ok(m) = parse_oru_with(&mutated, &ctx()) {
            for o in &m.observations {
                prop_assert!(o.reading < m.readings.len());
            }
        }
    }

    #[test]
    fn the_mllp_decoder_never_panics_and_never_loses_framed_messages(
        noise in proptest::collection::vec(any::<u8>(), 0..200),
        chunk in 1usize..50,
    ) {
        let mut d = MllpDecoder::with_max_len(64);
        for part in noise.chunks(chunk) {
            d.push(part);
            while d.next_message().is_some() {}
        }
        let _ = d.finish();
        // After any noise, a framed message still comes through whole.
        d.push(b"\x0bMSH|ok\r\x1c\r");
        let mut got = Vec::new();
        while let Some(m) = d.next_message() {
            got.push(m);
        }
        prop_assert_eq!(got.last(), Some(&Ok(b"MSH|ok\r".to_vec())));
    }
}
